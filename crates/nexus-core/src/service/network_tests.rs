//! Unit tests of network policies in the lifecycle: validation at create and at change,
//! storage, and the driver told of changes to running sandboxes.

use super::tests::world;
use super::{CreateSandbox, ServiceError};
use crate::NetworkSpec;

fn spec(allow: &[&str], deny: &[&str]) -> NetworkSpec {
    NetworkSpec {
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        deny: deny.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[tokio::test]
async fn a_bad_rule_at_create_is_named_and_nothing_is_made() {
    let w = world();
    let err = w
        .service
        .create(CreateSandbox {
            name: Some("web".into()),
            network: Some(spec(&["pypi.org:443", "github.com"], &[])),
            start: true,
            ..CreateSandbox::default()
        })
        .await
        .expect_err("bad rule");
    assert!(matches!(err, ServiceError::Invalid(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("network.allow[1]"), "{message}");
    assert!(message.contains("\"github.com\""), "{message}");
    assert!(w.service.list().await.expect("list").is_empty());
    assert!(w.driver.calls().is_empty(), "{:?}", w.driver.calls());
}

#[tokio::test]
async fn the_policy_is_stored_and_defaults_to_nothing_allowed() {
    let w = world();
    let view = w
        .service
        .create(CreateSandbox {
            name: Some("plain".into()),
            ..CreateSandbox::default()
        })
        .await
        .expect("create");
    assert_eq!(view.sandbox.spec.network, NetworkSpec::default());
    let view = w
        .service
        .create(CreateSandbox {
            name: Some("pip".into()),
            network: Some(spec(&["pypi.org:443"], &[])),
            ..CreateSandbox::default()
        })
        .await
        .expect("create");
    let stored = w.service.get("pip").await.expect("get");
    assert_eq!(stored.sandbox.spec.network, spec(&["pypi.org:443"], &[]));
    assert_eq!(view.sandbox.spec.network, stored.sandbox.spec.network);
}

#[tokio::test]
async fn changing_a_running_sandboxs_policy_reaches_the_driver() {
    let w = world();
    let view = w
        .service
        .create(CreateSandbox {
            name: Some("web".into()),
            start: true,
            ..CreateSandbox::default()
        })
        .await
        .expect("create");
    let id = view.sandbox.id.clone();
    let changed = w
        .service
        .set_network(
            "web",
            spec(&["*.github.com:443"], &["evil.github.com:*"]),
            true,
        )
        .await
        .expect("change");
    assert_eq!(
        changed.sandbox.spec.network,
        spec(&["*.github.com:443"], &["evil.github.com:*"])
    );
    assert!(w.driver.calls().contains(&format!("network-kill {id}")));
    w.service
        .set_network("web", spec(&[], &[]), false)
        .await
        .expect("change");
    assert!(w.driver.calls().contains(&format!("network {id}")));
}

#[tokio::test]
async fn a_bad_rule_on_change_keeps_the_old_policy() {
    let w = world();
    w.service
        .create(CreateSandbox {
            name: Some("web".into()),
            network: Some(spec(&["pypi.org:443"], &[])),
            start: true,
            ..CreateSandbox::default()
        })
        .await
        .expect("create");
    let err = w
        .service
        .set_network("web", spec(&["pypi.org:443"], &["10.0.0.1/8:*"]), false)
        .await
        .expect_err("bad deny rule");
    assert!(err.to_string().contains("network.deny[0]"), "{err}");
    let stored = w.service.get("web").await.expect("get");
    assert_eq!(stored.sandbox.spec.network, spec(&["pypi.org:443"], &[]));
    assert!(!w.driver.calls().iter().any(|c| c.starts_with("network")));
    let missing = w
        .service
        .set_network("nope", spec(&[], &[]), false)
        .await
        .expect_err("unknown sandbox");
    assert!(matches!(missing, ServiceError::NotFound(_)), "{missing:?}");
}

#[tokio::test]
async fn adoption_after_a_restart_tells_the_driver() {
    let w = world();
    let view = w
        .service
        .create(CreateSandbox {
            name: Some("web".into()),
            start: true,
            ..CreateSandbox::default()
        })
        .await
        .expect("create");
    let restarted = w.restarted();
    assert_eq!(restarted.adopt().await.expect("adopt"), 1);
    assert!(
        w.driver
            .calls()
            .contains(&format!("adopted {}", view.sandbox.id))
    );
}

#[tokio::test]
async fn the_agent_fast_path_never_outlives_a_change_of_the_record() {
    let w = world();
    w.service
        .create(CreateSandbox {
            name: Some("web".into()),
            start: true,
            ..CreateSandbox::default()
        })
        .await
        .expect("create");
    // Twice: the second is served from the hot map.
    for _ in 0..2 {
        let (sandbox, _) = w.service.agent("web").await.expect("agent");
        assert_eq!(sandbox.spec.network, NetworkSpec::default());
    }
    let changed = spec(&["pypi.org:443"], &[]);
    w.service
        .set_network("web", changed.clone(), false)
        .await
        .expect("change");
    let (sandbox, _) = w.service.agent("web").await.expect("agent");
    assert_eq!(
        sandbox.spec.network, changed,
        "a policy change is seen at once"
    );
    w.service.pause("web").await.expect("pause");
    let paused = w.service.agent("web").await.expect_err("paused");
    assert!(matches!(paused, ServiceError::Paused { .. }), "{paused:?}");
    w.service.resume("web").await.expect("resume");
    w.service.agent("web").await.expect("agent again");
    w.service.stop("web").await.expect("stop");
    let stopped = w.service.agent("web").await.expect_err("stopped");
    assert!(
        matches!(stopped, ServiceError::NotRunning { .. }),
        "{stopped:?}"
    );
}
