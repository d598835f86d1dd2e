//! `anycloud show` and `anycloud state list|show|rm`.

use crate::engine::{self, UserError};
use crate::render;

use super::filter::Filter;
use super::{read_plan_file, Context, ListFormat, ShowArgs, StateCommand};

pub(super) async fn show(cx: &Context<'_>, args: &ShowArgs) -> Result<i32, UserError> {
    if let Some(path) = &args.plan_file {
        let plan = read_plan_file(path)?;
        cx.shell.out(&if args.json() {
            render::json(&plan)
        } else {
            render::human_opts(&plan, cx.shell.stdout_styled(), cx.shell.verbose())
        });
        return Ok(0);
    }
    let state = engine::read_state(cx.store.as_ref()).await?;
    if args.json() {
        cx.shell.out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&state).expect("state serialises")
        ));
        return Ok(0);
    }
    if state.resources.is_empty() {
        cx.shell.out("The state is empty.\n");
        return Ok(0);
    }
    let mut text = String::new();
    for (addr, r) in &state.resources {
        text.push_str(&show_resource(addr, r));
        text.push('\n');
    }
    cx.shell.out(&text);
    Ok(0)
}

fn show_resource(addr: &str, r: &anycloud_state::Resource) -> String {
    let mut text = format!("# {addr}:\n{} \"{addr}\" {{\n", r.kind);
    if let Some(p) = r.pending {
        text.push_str(&format!("    # an operation was interrupted here: {p:?}\n"));
    }
    let width = r.attributes.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in &r.attributes {
        match v.as_str() {
            Some(s) if s.contains('\n') => {
                text.push_str(&format!("    {k:<width$} = <<-EOT\n"));
                for line in s.lines() {
                    text.push_str(&format!("        {line}\n"));
                }
                text.push_str("    EOT\n");
            }
            _ => text.push_str(&format!(
                "    {k:<width$} = {}\n",
                serde_json::to_string(v).expect("json")
            )),
        }
    }
    text.push_str("}\n");
    text
}

pub(super) async fn state(cx: &Context<'_>, cmd: &StateCommand) -> Result<i32, UserError> {
    let where_ = cx.store.describe();
    match cmd {
        StateCommand::List(args) => {
            let state = engine::read_state(cx.store.as_ref()).await?;
            let only = Filter::new(&args.only.only);
            let shown: Vec<(&String, &anycloud_state::Resource)> = state
                .resources
                .iter()
                .filter(|(a, _)| only.address(a))
                .collect();
            if shown.is_empty() && !only.is_all() {
                return Err(UserError::msg(format!(
                    "no address in {where_} matches {}",
                    args.only.only.join(", ")
                )));
            }
            cx.shell.out(&match args.format {
                ListFormat::Text => shown.iter().map(|(a, _)| format!("{a}\n")).collect(),
                ListFormat::Json => {
                    let list: Vec<serde_json::Value> = shown
                        .iter()
                        .map(|(a, r)| {
                            serde_json::json!({
                                "address": a,
                                "kind": r.kind,
                                "provider": r.provider,
                                "interrupted": r.pending.is_some(),
                            })
                        })
                        .collect();
                    let mut s = serde_json::to_string_pretty(&list).expect("json serialises");
                    s.push('\n');
                    s
                }
            });
            Ok(0)
        }
        StateCommand::Show { address } => {
            let state = engine::read_state(cx.store.as_ref()).await?;
            if let Some(r) = state.resources.get(address) {
                cx.shell.out(&show_resource(address, r));
                return Ok(0);
            }
            // A deployment's name or an address prefix shows everything under it.
            let only = Filter::new(std::slice::from_ref(address));
            let under: Vec<String> = state
                .resources
                .iter()
                .filter(|(a, _)| only.address(a))
                .map(|(a, r)| show_resource(a, r))
                .collect();
            if !under.is_empty() {
                cx.shell.out(&under.join("\n"));
                return Ok(0);
            }
            let mut message = format!("no resource '{address}' in {where_}");
            if let Some(hint) = super::filter::nearest(address, state.resources.keys()) {
                message.push_str(&format!("; {hint}"));
            }
            Err(UserError::msg(message))
        }
        StateCommand::Pull => {
            let state = engine::read_state(cx.store.as_ref()).await?;
            cx.shell
                .out(&String::from_utf8_lossy(&anycloud_state::to_bytes(&state)));
            Ok(0)
        }
        StateCommand::Migrate { from } => migrate(cx, from).await,
        StateCommand::Adopt { lineage } => {
            let valid = !lineage.is_empty()
                && lineage.len() <= 64
                && lineage
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(UserError::msg(format!(
                    "'{lineage}' is not a lineage: lineages are letters, digits, '-', '_' and '.' (the error that refused another state's object names it)"
                )));
            }
            let mut session = cx.session("state adopt").await?;
            let held = session.state.resources.len();
            if held > 0 {
                let message = format!(
                    "{where_} records {held} resource(s) of lineage {}: only an empty state can succeed a lost one, or the two states' objects would be mixed. Adopt into a new, empty state file (`--state PATH`); or, if what this one records should go, `anycloud destroy` it first (`state rm` would only forget it, and leave its objects running unmanaged)",
                    session.state.lineage
                );
                session.close().await;
                return Err(UserError::msg(message));
            }
            session.state.lineage = lineage.clone();
            session.state.serial += 1;
            let written = session.store.write(&session.state, &session.version).await;
            session.close().await;
            written?;
            cx.shell.out(&format!(
                "{where_} now continues lineage {lineage}. The next plan and apply take over what that state made for this config: a create finds the object there and keeps it as it is (a job whose spec has not changed keeps running). Run `anycloud plan` to review.\n"
            ));
            Ok(0)
        }
        StateCommand::Rm { address } => {
            let mut session = cx.session("state rm").await?;
            if let Some(a) = address
                .iter()
                .find(|a| !session.state.resources.contains_key(*a))
            {
                let message = format!("no resource '{a}' in {where_}; nothing was removed");
                session.close().await;
                return Err(UserError::msg(message));
            }
            for a in address {
                session.state.resources.remove(a);
            }
            session.state.ensure_lineage();
            session.state.serial += 1;
            let written = session.store.write(&session.state, &session.version).await;
            session.close().await;
            written?;
            cx.shell.out(&format!(
                "Removed {} resource(s) from the state; they were not destroyed.\n",
                address.len()
            ));
            Ok(0)
        }
    }
}

/// `state migrate --from FILE`: the file's state becomes the store's, under the store's
/// lock. Refused over another lineage's state (that would orphan its objects) and over a
/// newer state of the same lineage (that would forget what was applied since).
async fn migrate(cx: &Context<'_>, from: &std::path::Path) -> Result<i32, UserError> {
    let source = anycloud_state::LocalStore::new(from);
    let there = engine::read_state(&source).await?;
    if there.lineage.is_empty() {
        return Err(UserError::msg(format!(
            "{} holds no state: nothing to migrate",
            from.display()
        )));
    }
    let session = cx.session("state migrate").await?;
    let target = cx.store.describe();
    if target == anycloud_state::StateStore::describe(&source) {
        let _ = session.close().await;
        return Err(UserError::msg(format!(
            "{} is the state store already",
            from.display()
        )));
    }
    let here = &session.state;
    if !here.lineage.is_empty() && here.lineage != there.lineage {
        let (lineage, held) = (here.lineage.clone(), here.resources.len());
        let _ = session.close().await;
        return Err(UserError::msg(format!(
            "{target} holds a state of another lineage ({lineage}, {held} resource(s)); {} is of lineage {}. Nothing was written: migrating over it would leave that state's objects unmanaged",
            from.display(),
            there.lineage
        )));
    }
    if here.lineage == there.lineage && here.serial > there.serial {
        let serial = here.serial;
        let _ = session.close().await;
        return Err(UserError::msg(format!(
            "{target} holds a newer state of the same lineage (serial {serial}, {} has {}): nothing was written",
            from.display(),
            there.serial
        )));
    }
    let mut state = there.clone();
    state.serial = state.serial.max(session.state.serial) + 1;
    let written = session.store.write(&state, &session.version).await;
    let _ = session.close().await;
    written?;
    cx.shell.out(&format!(
        "Migrated {} resource(s) of lineage {} from {} to {target}. {} is left as it was: remove it once the new store is in use.\n",
        state.resources.len(),
        state.lineage,
        from.display(),
        from.display()
    ));
    Ok(0)
}
