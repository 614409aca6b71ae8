//! `nexusctl image list|inspect|import|build|delete`.

use std::fmt::Write;

use anyhow::Context;
use futures::StreamExt;
use nexus_api::{
    BuildImageRequest, ImageBuildEvent, ImageInfo, ImageSourceInfo, ImportImageRequest,
};
use nexus_client::Client;

use crate::cli::ImageCommand;
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
            let mut events = client
                .build_image(&BuildImageRequest {
                    name: name.clone(),
                    from,
                    packages,
                })
                .await?;
            while let Some(event) = events.next().await {
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
            anyhow::bail!("the daemon ended the build of {name} without a result")
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
