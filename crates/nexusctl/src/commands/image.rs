//! `nexusctl image list|inspect|import|build|builds|cancel|delete`.

use std::fmt::Write;

use anyhow::Context;
use futures::StreamExt;
use nexus_api::{
    BuildImageRequest, ImageBuildEvent, ImageInfo, ImageSourceInfo, ImportImageRequest,
};
use nexus_client::Client;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ImageCommand;
use crate::commands::exec::ExitWith;
use crate::output::{Output, age, human_bytes, plain_table, render_table, write_raw};

/// Runs one `image` subcommand.
pub async fn run(client: &Client, command: ImageCommand, out: Output) -> anyhow::Result<()> {
    match command {
        ImageCommand::List => {
            let list = client.list_images().await?;
            if out.json {
                return out.json(&list);
            }
            let mut table = plain_table(&["NAME", "ID", "SOURCE", "SIZE", "USED BY", "AGE"]);
            for i in &list.images {
                table.add_row([
                    i.name.clone(),
                    i.id.clone().unwrap_or_else(|| "-".into()),
                    source_kind(&i.source).to_owned(),
                    i.size_bytes.map_or_else(|| "-".into(), human_bytes),
                    i.used_by.len().to_string(),
                    i.created_at.as_deref().map_or_else(|| "-".into(), age),
                ]);
            }
            out.text(&render_table(table))
        }
        ImageCommand::Inspect { image } => {
            let info = client.image(&image).await?;
            if out.json {
                return out.json(&info);
            }
            out.text(&inspect_text(&info))
        }
        ImageCommand::Import { dir, name } => {
            let dir = std::path::absolute(&dir)
                .with_context(|| format!("cannot make {} absolute", dir.display()))?;
            let path = dir
                .to_str()
                .with_context(|| format!("{} is not UTF-8", dir.display()))?
                .to_owned();
            let info = client
                .import_image(&ImportImageRequest { name, path })
                .await?;
            if out.json {
                return out.json(&info);
            }
            out.text(&format!(
                "{} imported ({}, {})\n",
                info.name,
                info.id.as_deref().unwrap_or("-"),
                info.size_bytes.map_or_else(|| "-".into(), human_bytes)
            ))
        }
        ImageCommand::Build {
            name,
            from,
            packages,
        } => {
            build(
                client,
                BuildImageRequest {
                    name,
                    from,
                    packages,
                },
                out,
            )
            .await
        }
        ImageCommand::Builds => {
            let list = client.image_builds().await?;
            if out.json {
                return out.json(&list);
            }
            let mut table = plain_table(&["NAME", "FROM", "PACKAGES", "STARTED"]);
            for b in &list.builds {
                table.add_row([
                    b.name.clone(),
                    b.from.clone(),
                    if b.packages.is_empty() {
                        "-".into()
                    } else {
                        b.packages.join(",")
                    },
                    format!("{} ago", age(&b.started_at)),
                ]);
            }
            out.text(&render_table(table))
        }
        ImageCommand::Cancel { name } => {
            client.cancel_image_build(&name).await?;
            if out.json {
                out.json(&serde_json::json!({ "cancelled": name }))
            } else {
                out.text(&format!("the build of {name} is cancelled\n"))
            }
        }
        ImageCommand::Delete { image } => {
            client.delete_image(&image).await?;
            if out.json {
                out.json(&serde_json::json!({ "deleted": image }))
            } else {
                out.text(&format!("{image} deleted\n"))
            }
        }
    }
}

/// `nexusctl image build`: streams the progress to stderr and prints the image. Ctrl-C
/// (from the moment the request is sent) asks the daemon to cancel the build, then exits
/// with 130; a second Ctrl-C exits without waiting for the cancel.
async fn build(client: &Client, request: BuildImageRequest, out: Output) -> anyhow::Result<()> {
    // Installed before the request, so no Ctrl-C leaves a build running unseen.
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the Ctrl-C handler")?;
    let name = request.name.clone();
    let mut events = tokio::select! {
        started = client.build_image(&request) => started?,
        _ = interrupt.recv() => return interrupted(client, &name, &mut interrupt).await,
    };
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = interrupt.recv() => return interrupted(client, &name, &mut interrupt).await,
        };
        let Some(event) = event else {
            anyhow::bail!("the daemon ended the build of {name} without a result");
        };
        match event? {
            ImageBuildEvent::Progress { line } => {
                // Progress goes to stderr, so stdout stays the result.
                write_raw(&mut std::io::stderr(), format!("{line}\n").as_bytes())?;
            }
            ImageBuildEvent::Done { image } => {
                if out.json {
                    return out.json(&image);
                }
                return out.text(&format!(
                    "{} built ({}, {})\n",
                    image.name,
                    image.id.as_deref().unwrap_or("-"),
                    image.size_bytes.map_or_else(|| "-".into(), human_bytes)
                ));
            }
            ImageBuildEvent::Failed { error } => {
                anyhow::bail!("{} ({})", error.message, error.code);
            }
        }
    }
}

/// After Ctrl-C during a build: asks the daemon to cancel it, then leaves with 130 (as a
/// shell reports SIGINT).
async fn interrupted(
    client: &Client,
    name: &str,
    interrupt: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    write_raw(
        &mut std::io::stderr(),
        format!("cancelling the build of {name}\n").as_bytes(),
    )?;
    let cancelled = tokio::select! {
        cancelled = client.cancel_image_build(name) => cancelled,
        _ = interrupt.recv() => Ok(()),
    };
    match cancelled {
        // It ended meanwhile, or the request was refused before it started.
        Ok(()) => {}
        Err(e) if e.code() == Some("image_build_not_found") => {}
        Err(e) => {
            let e = anyhow::Error::from(e);
            let text = format!("Error: cannot cancel the build of {name}: {e:#}\n");
            write_raw(&mut std::io::stderr(), text.as_bytes())?;
        }
    }
    Err(ExitWith(130).into())
}

fn source_kind(source: &ImageSourceInfo) -> &'static str {
    match source {
        ImageSourceInfo::Builtin => "builtin",
        ImageSourceInfo::Imported { .. } => "imported",
        ImageSourceInfo::Built { .. } => "built",
    }
}

fn inspect_text(info: &ImageInfo) -> String {
    let mut text = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(text, "{:<9} {value}", format!("{label}:"));
    };
    row("Name", info.name.clone());
    row("Id", info.id.clone().unwrap_or_else(|| "-".into()));
    match &info.source {
        ImageSourceInfo::Builtin => {
            row(
                "Source",
                "built in: the host's /, read-only, secrets masked".into(),
            );
        }
        ImageSourceInfo::Imported { from_dir } => {
            row("Source", format!("imported from {from_dir}"))
        }
        ImageSourceInfo::Built {
            from,
            packages,
            tool,
        } => {
            row("Source", format!("built from {from} with {tool}"));
            row("Packages", packages.join(", "));
        }
    }
    if let Some(size) = info.size_bytes {
        row("Size", human_bytes(size));
    }
    if let Some(created) = &info.created_at {
        row("Created", format!("{created} ({} ago)", age(created)));
    }
    row(
        "Used by",
        if info.used_by.is_empty() {
            "-".into()
        } else {
            info.used_by.join(", ")
        },
    );
    text
}
