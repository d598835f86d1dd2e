//! The journal: one line per operation's intent (a resource marked pending, made durable
//! before the operation starts) and one per its result (the resource as it now is, or gone;
//! made durable with the next intents), appended instead of rewriting the whole state around
//! every operation. Entries are absolute, so replaying one twice is harmless. The first line
//! says which state it applies to: a journal whose state has moved on (it was folded, and
//! the run died before removing it) is ignored.

use serde::{Deserialize, Serialize};

use crate::{Resource, State};

/// The first line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub journal: u32,
    /// The lineage of the state it applies to (an unborn state gets this one).
    pub lineage: String,
    /// The serial of the stored state it applies to.
    pub base_serial: u64,
    /// The id of the lock its writer held (a remote store's batches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lock: String,
}

/// One change of the state: `resource` is what `address` now is, `None` if it is gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub address: String,
    pub resource: Option<Resource>,
}

impl Entry {
    /// Makes the change in `state`, moving the resource there.
    pub fn into_state(self, state: &mut State) {
        match self.resource {
            Some(r) => {
                state.resources.insert(self.address, r);
            }
            None => {
                state.resources.remove(&self.address);
            }
        }
    }

    pub fn apply(&self, state: &mut State) {
        match &self.resource {
            Some(r) => {
                state.resources.insert(self.address.clone(), r.clone());
            }
            None => {
                state.resources.remove(&self.address);
            }
        }
    }
}

pub(crate) fn header_line(lineage: &str, base_serial: u64, lock: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Header {
        journal: 1,
        lineage: lineage.to_owned(),
        base_serial,
        lock: lock.to_owned(),
    })
    .expect("plain data");
    line.push(b'\n');
    line
}

pub(crate) fn entry_lines(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut out, e).expect("plain data");
        out.push(b'\n');
    }
    out
}

/// The journal's header and entries. A last line cut short by a crash mid-write is dropped:
/// an intent cut short was never durable, so its operation never started; a result cut
/// short leaves its operation pending, to be run again. (One writer appends in order, so
/// only the last line can be cut short; lines are read up to the first that does not parse.)
pub(crate) fn parse(bytes: &[u8]) -> Option<(Header, Vec<Entry>)> {
    let mut lines = bytes.split(|b| *b == b'\n');
    let header: Header = serde_json::from_slice(lines.next()?).ok()?;
    let entries = lines
        .filter(|l| !l.is_empty())
        .map_while(|l| serde_json::from_slice::<Entry>(l).ok())
        .collect();
    Some((header, entries))
}

/// Whether a journal with `header` applies to a stored state of `lineage` (empty: none
/// stored yet, which a journal gives its lineage) and `serial`.
pub(crate) fn applies(header: &Header, lineage: &str, serial: u64) -> bool {
    header.base_serial == serial && (lineage.is_empty() || header.lineage == lineage)
}

/// Whether a batch one serial behind `state` was written under a lock that `state` did not
/// fold in: a holder whose lock was forced away folded over a newer holder's batches, which
/// are that newer holder's work and must not be lost.
pub(crate) fn unfolded(header: &Header, state: &State) -> bool {
    !header.lock.is_empty()
        && !state.folded_locks.is_empty()
        && !state.folded_locks.contains(&header.lock)
        && header.lineage == state.lineage
        && header.base_serial + 1 == state.serial
}

/// Replays `entries` over `state`: the state of the run that wrote them. Its serial moves
/// on, so a plan saved against the state before that run is stale.
pub(crate) fn replay(state: &mut State, header: &Header, entries: &[Entry]) {
    if entries.is_empty() {
        return;
    }
    if state.lineage.is_empty() {
        state.lineage = header.lineage.clone();
    }
    for e in entries {
        e.apply(state);
    }
    state.serial += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_dropped() {
        let mut bytes = header_line("l", 4, "");
        bytes.extend(entry_lines(&[Entry {
            address: "a".into(),
            resource: None,
        }]));
        bytes.extend_from_slice(br#"{"address":"b","reso"#);
        let (header, entries) = parse(&bytes).unwrap();
        assert_eq!(header.base_serial, 4);
        assert_eq!(entries.len(), 1);
    }
}
