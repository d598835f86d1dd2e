//! Whether a container image is in this machine's Docker daemon, asked at plan time: a
//! missing image used to pass validate and plan and fail the container step after the rest
//! of the deployment was made.

use anycloud_host::render::quote;
use anycloud_host::Host;
use anycloud_provider::ImageCheck;

/// How long the daemon has to answer: a plan never hangs on it.
const ANSWER_SECS: u32 = 20;

/// `docker image inspect IMAGE` on this machine: found, missing (the daemon's words, and how
/// to build or pull it), or unknown (no daemon to ask: a warning, the apply says the rest).
pub async fn check(host: &dyn Host, image: &str) -> ImageCheck {
    let script = format!(
        "timeout {ANSWER_SECS} docker image inspect --format '{{{{.Id}}}}' {}",
        quote(image)
    );
    let out = match host.run(&script).await {
        Ok(out) => out,
        Err(e) => {
            return ImageCheck::Unknown(format!(
                "could not ask this machine's Docker for image '{image}': {e}"
            ))
        }
    };
    if out.success() {
        return ImageCheck::Found;
    }
    let said = out.stderr.trim();
    let said = said.strip_prefix("Error: ").unwrap_or(said);
    let said = said
        .strip_prefix("Error response from daemon: ")
        .unwrap_or(said);
    if said.contains("No such image") || said.contains("No such object") {
        // The container step pulls what the daemon lacks: a reference naming its registry
        // is as good as there when that registry has it (and its answer when it has not).
        if anycloud_host::registry::parse(image).is_some() {
            return anycloud_host::registry::check(image).await;
        }
        return ImageCheck::Missing {
            message: format!("image '{image}' is not in this machine's Docker daemon ({said})"),
            help: format!(
                "build it (`docker build -t {image} .`) or pull it (`docker pull {image}`), then plan again"
            ),
        };
    }
    if out.status == 124 {
        return ImageCheck::Unknown(format!(
            "this machine's Docker did not say within {ANSWER_SECS}s whether it has image '{image}'"
        ));
    }
    ImageCheck::Unknown(format!(
        "could not ask this machine's Docker for image '{image}': {said}"
    ))
}
