//! The plan-time image check against a real registry (issue 25, item 5): Debian's
//! `docker-registry` (the CNCF distribution registry) on a loopback port, an image pushed to
//! it with Docker; asked directly, and through `plan` of an AWS deployment against moto.
//!
//! Needs root with docker and docker-registry installed (`scripts/prereqs.sh`), and moto.

mod common;

use std::time::{Duration, Instant};

use anycloud_host::registry::check;
use anycloud_provider::ImageCheck;
use common::registry::{free_port, push};

#[tokio::test]
async fn a_registry_says_which_images_it_has() {
    let registry = common::registry::start();
    let host = format!("127.0.0.1:{}", registry.port);
    let pushed = format!("{host}/anycloud/job:v1");
    push(&pushed);

    assert_eq!(check(&pushed).await, ImageCheck::Found);

    let absent = format!("{host}/anycloud/job:v404");
    match check(&absent).await {
        ImageCheck::Missing { message, help } => {
            assert!(
                message.contains(&format!("image '{absent}' is not in registry {host}")),
                "{message}"
            );
            // The registry's own words.
            assert!(message.contains("MANIFEST_UNKNOWN"), "{message}");
            assert!(help.contains(&format!("docker push {absent}")), "{help}");
        }
        other => panic!("{other:?}"),
    }
    match check(&format!("{host}/anycloud/nothing-here:v1")).await {
        ImageCheck::Missing { message, .. } => {
            assert!(
                message.contains("NAME_UNKNOWN") || message.contains("MANIFEST_UNKNOWN"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }

    // A registry that is not there: a warning, soon.
    let gone = free_port();
    let start = Instant::now();
    match check(&format!("127.0.0.1:{gone}/anycloud/job:v1")).await {
        ImageCheck::Unknown(why) => assert!(why.contains("could not be asked"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(11));

    // Without a registry host nothing is asked (an image of this machine's daemon only).
    assert_eq!(check("anycloud-e2e:v1").await, ImageCheck::Unchecked);
    assert_eq!(check("busybox").await, ImageCheck::Unchecked);
}

/// Through the CLI on a cloud: a missing image fails the plan at its `container.image`
/// with the registry's words; a pushed one plans; a registry that is not there is a warning.
#[test]
fn a_cloud_plan_fails_on_an_image_the_registry_lacks() {
    let registry = common::registry::start();
    let host = format!("127.0.0.1:{}", registry.port);
    let pushed = format!("{host}/anycloud/train:v1");
    push(&pushed);
    let moto = common::moto::Moto::start("127.0.0.1");
    let config = |image: &str| {
        format!(
            "project: imgreg\nproviders:\n  aws: {{ ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }}\ndeployments:\n  reg-job:\n    provider: aws\n    region: us-east-1\n    vm: {{ type: t3.micro }}\n    container: {{ image: \"{image}\" }}\n    buckets: {{ output: reg-job-out }}\n"
        )
    };
    let missing = format!("{host}/anycloud/train:v404");
    let mut p = common::Project::new(&config(&missing));
    p.env = moto.env();
    let refused = p.run(&["plan"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("anycloud.yaml:9:25"), "{refused:?}");
    assert!(refused.stderr.contains("MANIFEST_UNKNOWN"), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!("docker push {missing}")),
        "{refused:?}"
    );

    p.write_config(&config(&pushed));
    let planned = p.ok(&["plan"]);
    assert!(planned.stdout.contains("to add"), "{planned:?}");

    let gone = format!("127.0.0.1:{}/anycloud/train:v1", free_port());
    p.write_config(&config(&gone));
    let warned = p.ok(&["plan"]);
    let all = format!("{}{}", warned.stdout, warned.stderr);
    assert!(all.contains("could not be asked"), "{warned:?}");
}

/// On the local cloud, an image the daemon lacks but its registry has plans (the container
/// step pulls it); one neither has fails with the registry's words.
#[test]
fn a_local_plan_asks_the_registry_for_what_the_daemon_lacks() {
    let registry = common::registry::start();
    let host = format!("127.0.0.1:{}", registry.port);
    let pushed = format!("{host}/anycloud/local-job:v1");
    push(&pushed); // and removed from the daemon again
    let config = |image: &str| {
        format!(
            "defaults: {{ provider: local }}\ndeployments:\n  reg-local:\n    container: {{ image: \"{image}\" }}\n    buckets: {{ output: reg-local-out }}\n"
        )
    };
    let p = common::Project::new(&config(&pushed));
    p.ok(&["plan"]);
    let missing = format!("{host}/anycloud/local-job:v404");
    p.write_config(&config(&missing));
    let refused = p.run(&["plan"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("anycloud.yaml:4:25"), "{refused:?}");
    assert!(refused.stderr.contains("MANIFEST_UNKNOWN"), "{refused:?}");
}
