//! `fastpath ctl reload` and SIGHUP: read the config file again and apply the difference while
//! the switch runs. What can change live today is the static MAC table (`[[fdb]]`): entries
//! gone from the file are removed, new or changed ones added. A change anywhere else (ports,
//! bridges, `[vswitch]`, neighbours) needs a restart: the reload then names the sections that
//! changed and applies nothing. A file that does not parse or check is refused the same way, with
//! the error `fastpath vswitch` would print at start.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fastpath_pipeline::switch::{FdbTarget, SwitchControl};
use fastpath_pmd::sys::fmt_mac;
use serde_json::{json, Value};

use super::config::Config;

/// A static entry: (bridge, vlan, MAC) -> port name or VTEP.
type Statics = BTreeMap<(String, Option<u16>, [u8; 6]), (Option<String>, Option<IpAddr>)>;

fn statics(c: &Config) -> Statics {
    c.fdb
        .iter()
        .map(|f| {
            let key = (f.bridge.get_ref().clone(), f.vlan, f.mac);
            (key, (f.port.as_ref().map(|p| p.get_ref().clone()), f.vtep))
        })
        .collect()
}

/// The top-level sections of `text` other than `[[fdb]]`, as TOML values.
fn fixed_sections(text: &str) -> BTreeMap<String, toml::Value> {
    let mut t: toml::Table = toml::from_str(text).unwrap_or_default();
    t.remove("fdb");
    t.into_iter().collect()
}

/// Reads `cfg`'s file again and applies the difference to `ctl`; on success `cfg` becomes the
/// new config. Answers what was removed and added.
pub fn reload(cfg: &mut Config, ctl: &mut SwitchControl) -> Result<Value, String> {
    let new = Config::load(&cfg.source.path).map_err(|e| format!("reload refused, nothing applied: {}", e.0))?;
    let (old_s, new_s) = (fixed_sections(&cfg.source.text), fixed_sections(&new.source.text));
    let mut changed: Vec<String> =
        old_s.keys().chain(new_s.keys()).filter(|k| old_s.get(*k) != new_s.get(*k)).cloned().collect();
    changed.sort();
    changed.dedup();
    if !changed.is_empty() {
        let list: Vec<String> = changed.iter().map(|k| format!("[{k}]")).collect();
        return Err(format!(
            "reload refused, nothing applied: {} changed, which needs a restart (only [[fdb]] is applied live)",
            list.join(", ")
        ));
    }
    let (was, now) = (statics(cfg), statics(&new));
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let mut failed = Vec::new();
    for (k, v) in &was {
        if now.get(k) != Some(v) {
            match ctl.fdb_del(&k.0, k.1, k.2) {
                Ok(_) => removed.push(json!({"bridge": k.0, "vlan": k.1, "mac": fmt_mac(&k.2)})),
                Err(e) => failed.push(format!("{} in {}: {e}", fmt_mac(&k.2), k.0)),
            }
        }
    }
    for (k, v) in &now {
        if was.get(k) == Some(v) {
            continue;
        }
        let to = match v {
            (Some(p), _) => FdbTarget::Port(p),
            (None, Some(ip)) => FdbTarget::Vtep(*ip),
            (None, None) => continue, // the config check requires one of them
        };
        match ctl.fdb_add(&k.0, k.1, k.2, to) {
            Ok(()) => added.push(json!({"bridge": k.0, "vlan": k.1, "mac": fmt_mac(&k.2), "port": v.0, "vtep": v.1})),
            Err(e) => failed.push(format!("{} in {}: {e}", fmt_mac(&k.2), k.0)),
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "reload applied in part: {} removed, {} added; failed: {}",
            removed.len(),
            added.len(),
            failed.join("; ")
        ));
    }
    *cfg = new;
    Ok(json!({"removed": removed, "added": added}))
}
