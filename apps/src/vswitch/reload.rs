//! `fastpath ctl reload` and SIGHUP: read the config file again and apply the difference while
//! the switch runs. What can change live: the static MAC table (`[[fdb]]`: entries gone from the
//! file are removed, new or changed ones added) and the security groups (`[[security_group]]`
//! and the ports' `security_groups` lists, applied at once through
//! [`SwitchControl::replace_security_groups`], which cuts tracked connections no rule allows any
//! more). A change anywhere else (ports, their `allowed` / `trusted`, bridges, `[vswitch]`,
//! neighbours), or a port gaining its first group or losing its last, needs a restart: the reload
//! then names what changed and applies nothing. A file that does not parse or check is refused the same way, with
//! the error `fastpath vswitch` would print at start.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fastpath_pipeline::switch::{FdbTarget, PortGroups, SecurityGroup, SwitchControl};
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

/// The top-level sections of `text` other than `[[fdb]]` and `[[security_group]]`, as TOML
/// values, without the ports' `security_groups` (and without the keys `strip` names too).
fn fixed_sections(text: &str, strip: &[&str]) -> BTreeMap<String, toml::Value> {
    let mut t: toml::Table = toml::from_str(text).unwrap_or_default();
    t.remove("fdb");
    t.remove("security_group");
    if let Some(toml::Value::Array(ports)) = t.get_mut("port") {
        for p in ports.iter_mut().filter_map(toml::Value::as_table_mut) {
            p.remove("security_groups");
            for k in strip {
                p.remove(*k);
            }
        }
    }
    t.into_iter().collect()
}

/// The ports whose `allowed` or `trusted` changed (port security has no live setter).
fn port_security_changed(old: &Config, new: &Config) -> Vec<String> {
    let key = |p: &super::config::Port| (format!("{:?}", p.allowed.as_ref().map(|a| a.get_ref())), p.trusted);
    old.port.iter().zip(&new.port).filter(|(a, b)| key(a) != key(b)).map(|(_, b)| b.name.get_ref().clone()).collect()
}

/// The security groups of `c` and the ports' lists of them.
fn groups_of(c: &Config) -> (Vec<SecurityGroup>, Vec<PortGroups>) {
    (c.security_groups(), c.port_groups())
}

/// Reads `cfg`'s file again and applies the difference to `ctl`; on success `cfg` becomes the
/// new config. Answers what was removed and added.
pub fn reload(cfg: &mut Config, ctl: &mut SwitchControl) -> Result<Value, String> {
    let new = Config::load(&cfg.source.path).map_err(|e| format!("reload refused, nothing applied: {}", e.0))?;
    let (old_s, new_s) = (fixed_sections(&cfg.source.text, &[]), fixed_sections(&new.source.text, &[]));
    let ports_same_but_security = fixed_sections(&cfg.source.text, &["allowed", "trusted"])
        == fixed_sections(&new.source.text, &["allowed", "trusted"]);
    if old_s != new_s && ports_same_but_security {
        return Err(format!(
            "reload refused, nothing applied: the port security (allowed / trusted) of port {} changed, which \
             cannot change while the switch runs: restart it (security groups and [[fdb]] are applied live)",
            port_security_changed(cfg, &new).join(", ")
        ));
    }
    let mut changed: Vec<String> =
        old_s.keys().chain(new_s.keys()).filter(|k| old_s.get(*k) != new_s.get(*k)).cloned().collect();
    changed.sort();
    changed.dedup();
    if !changed.is_empty() {
        let list: Vec<String> = changed.iter().map(|k| format!("[{k}]")).collect();
        return Err(format!(
            "reload refused, nothing applied: {} changed, which needs a restart (only [[fdb]], \
             [[security_group]] and the ports' security_groups are applied live)",
            list.join(", ")
        ));
    }
    let (old_g, new_g) = (groups_of(cfg), groups_of(&new));
    let sg_changed = old_g != new_g;
    if sg_changed {
        let (groups, ports) = new_g;
        ctl.replace_security_groups(groups, &ports).map_err(|e| format!("reload refused, nothing applied: {e}"))?;
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
            "reload applied in part: {} removed, {} added, security groups {}; failed: {}",
            removed.len(),
            added.len(),
            if sg_changed { "replaced" } else { "unchanged" },
            failed.join("; ")
        ));
    }
    *cfg = new;
    Ok(
        json!({"removed": removed, "added": added, "security_groups": if sg_changed { "replaced" } else { "unchanged" }}),
    )
}
