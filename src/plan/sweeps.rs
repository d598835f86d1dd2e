//! The plan's grouping of a sweep's deployments: one line per sweep under the summary.
//! (The members' changes are listed like any deployment's; `--format json` has the
//! sweeps, each member's id and values, as the plan's `sweeps`.)

use super::Plan;

/// `sweep train: 6 deployments (lr × seed)`, one line per sweep of the config, in the
/// order written; empty when there is none.
pub fn summary_lines(plan: &Plan) -> String {
    let mut out = String::new();
    for s in &plan.sweeps {
        let n = s.members.len();
        let plural = if n == 1 { "" } else { "s" };
        out.push_str(&format!(
            "sweep {}: {n} deployment{plural} ({})\n",
            s.name,
            s.axes.join(" × ")
        ));
    }
    out
}
