//! `fs_glob` and `fs_grep` against the real agent: `.gitignore` on and off, hidden files,
//! binary files skipped, caps.

use nexus_agent_proto::ErrorCode;
use nexus_agent_proto::fs::{FileType, GlobRequest, GrepRequest};

use crate::fs::{Fixture, remote_code};

/// A small tree for glob and grep: a `.gitignore`d file, a hidden one, a binary one.
fn search_tree(fx: &Fixture) {
    std::fs::create_dir_all(fx.path("src/nested")).expect("writing the test tree");
    std::fs::write(fx.path(".gitignore"), "ignored.rs\n").expect("writing the test tree");
    std::fs::write(fx.path("src/main.rs"), "fn main() {\n    Needle();\n}\n")
        .expect("writing the test tree");
    std::fs::write(
        fx.path("src/nested/lib.rs"),
        "// needle here\nneedle again\n",
    )
    .expect("writing the test tree");
    std::fs::write(fx.path("src/ignored.rs"), "needle ignored\n").expect("writing the test tree");
    std::fs::write(fx.path(".hidden.rs"), "needle hidden\n").expect("writing the test tree");
    std::fs::write(fx.path("blob.bin"), b"needle\0binary\n").expect("writing the test tree");
    std::fs::write(fx.path("notes.txt"), "a.b literal needle\n").expect("writing the test tree");
}

#[tokio::test]
async fn glob_respects_gitignore_only_when_asked_and_truncates() {
    let fx = Fixture::new();
    search_tree(&fx);
    let client = fx.agent.connect().await;
    let mut request = GlobRequest {
        root: fx.abs(""),
        patterns: vec!["**/*.rs".into()],
        respect_gitignore: false,
        skip_hidden: false,
        max_results: 100,
    };
    let rel = |result: &nexus_agent_proto::fs::GlobResult| -> Vec<String> {
        result
            .matches
            .iter()
            .map(|m| m.path.strip_prefix(&fx.abs("")).unwrap().to_owned())
            .collect()
    };
    let all = client.fs_glob(request.clone()).await.unwrap();
    assert_eq!(
        rel(&all),
        [
            ".hidden.rs",
            "src/ignored.rs",
            "src/main.rs",
            "src/nested/lib.rs"
        ]
    );
    assert!(all.matches.iter().all(|m| m.file_type == FileType::File));
    request.respect_gitignore = true;
    request.skip_hidden = true;
    let filtered = client.fs_glob(request.clone()).await.unwrap();
    assert_eq!(rel(&filtered), ["src/main.rs", "src/nested/lib.rs"]);
    request.max_results = 1;
    let capped = client.fs_glob(request).await.unwrap();
    assert_eq!(capped.matches.len(), 1);
    assert!(capped.truncated);
}

#[tokio::test]
async fn grep_finds_lines_skips_binary_files_and_truncates() {
    let fx = Fixture::new();
    search_tree(&fx);
    let client = fx.agent.connect().await;
    let rel = |result: &nexus_agent_proto::fs::GrepResult| -> Vec<(String, u64, u64)> {
        result
            .matches
            .iter()
            .map(|m| {
                let path = m.path.strip_prefix(&fx.abs("")).unwrap().to_owned();
                (path, m.line, m.column)
            })
            .collect()
    };
    let mut request = GrepRequest::new(fx.abs(""), "needle");
    let plain = client.fs_grep(request.clone()).await.unwrap();
    assert_eq!(
        rel(&plain),
        [
            (".hidden.rs".to_owned(), 1, 1),
            ("notes.txt".to_owned(), 1, 13),
            ("src/ignored.rs".to_owned(), 1, 1),
            ("src/nested/lib.rs".to_owned(), 1, 4),
            ("src/nested/lib.rs".to_owned(), 2, 1),
        ]
    );
    assert_eq!(plain.binary_files_skipped, 1, "blob.bin");
    assert_eq!(plain.matches[3].text, "// needle here");

    request.case_insensitive = true;
    request.respect_gitignore = true;
    request.skip_hidden = true;
    request.globs = vec!["*.rs".into()];
    let found = client.fs_grep(request.clone()).await.unwrap();
    assert_eq!(
        rel(&found),
        [
            ("src/main.rs".to_owned(), 2, 5),
            ("src/nested/lib.rs".to_owned(), 1, 4),
            ("src/nested/lib.rs".to_owned(), 2, 1),
        ]
    );
    request.max_results = 2;
    let capped = client.fs_grep(request).await.unwrap();
    assert_eq!(capped.matches.len(), 2);
    assert!(capped.truncated);

    let mut literal = GrepRequest::new(fx.abs(""), "a.b");
    literal.fixed_string = true;
    let found = client.fs_grep(literal.clone()).await.unwrap();
    assert_eq!(rel(&found), [("notes.txt".to_owned(), 1, 1)]);
    literal.pattern = "(".into();
    literal.fixed_string = false;
    let err = client.fs_grep(literal).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::BadRequest);
}
