//! `fastpath ctl reload` and SIGHUP: read the config file again and apply the difference while
//! the switch runs, as the live commands would. What can change live:
//!
//! - the access ports (`[[port]]`): a port gone from the file is unplugged (`port del`), a new
//!   one plugged (`port add`), a changed one unplugged and plugged again; a port plugged live
//!   has neither port security nor security groups, so a new or changed port that has
//!   `allowed`, `trusted` or `security_groups` needs a restart, as does any change of the uplink;
//! - the static MAC table (`[[fdb]]`: entries gone from the file are removed, new or changed
//!   ones added);
//! - the security groups (`[[security_group]]` and the ports' `security_groups` lists, applied at
//!   once through [`SwitchControl::replace_security_groups`], which cuts tracked connections no
//!   rule allows any more).
//!
//! A change anywhere else (bridges, `[vswitch]`, neighbours), of a kept port's `allowed` /
//! `trusted`, or a port gaining its first group or losing its last, needs a restart: the reload
//! then names what changed and applies nothing. A file that does not parse or check is refused
//! the same way, with the error `fastpath vswitch` would print at start. The steps run in the
//! order ports out, security groups, ports in, static MACs; a step that fails after an earlier
//! one was applied (a port that cannot be opened) stops there and says what was applied.

use std::collections::BTreeMap;
use std::net::IpAddr;

#[cfg(doc)]
use fastpath_pipeline::switch::SwitchControl;
use fastpath_pipeline::switch::{FdbTarget, PortGroups, SecurityGroup};
use fastpath_pmd::sys::fmt_mac;
use serde_json::{json, Value};

use super::commands::Live;
use super::config::{Config, Role};
use super::live::Plugged;

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

/// The top-level sections of `text` other than `[[fdb]]`, `[[security_group]]` and `[[port]]`,
/// as TOML values.
fn fixed_sections(text: &str) -> BTreeMap<String, toml::Value> {
    let mut t: toml::Table = toml::from_str(text).unwrap_or_default();
    t.remove("fdb");
    t.remove("security_group");
    t.remove("port");
    t.into_iter().collect()
}

/// Each `[[port]]` of `text` by name, as a TOML table without `security_groups` (and without
/// the keys `strip` names too).
fn port_tables(text: &str, strip: &[&str]) -> BTreeMap<String, toml::Table> {
    let t: toml::Table = toml::from_str(text).unwrap_or_default();
    let Some(toml::Value::Array(ports)) = t.get("port") else { return BTreeMap::new() };
    ports
        .iter()
        .filter_map(toml::Value::as_table)
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?.to_string();
            let mut p = p.clone();
            p.remove("security_groups");
            for k in strip {
                p.remove(*k);
            }
            Some((name, p))
        })
        .collect()
}

/// What a reload does to the ports: names to unplug, ports to plug (in file order).
struct PortPlan {
    out: Vec<String>,
    into: Vec<Plugged>,
}

/// The ports to unplug and plug, or why the change needs a restart.
fn port_plan(old: &Config, new: &Config) -> Result<PortPlan, String> {
    let (was, now) = (port_tables(&old.source.text, &[]), port_tables(&new.source.text, &[]));
    let (was_ps, now_ps) = (
        port_tables(&old.source.text, &["allowed", "trusted"]),
        port_tables(&new.source.text, &["allowed", "trusted"]),
    );
    let security: Vec<&String> =
        was.keys().filter(|n| now.contains_key(*n) && was[*n] != now[*n] && was_ps[*n] == now_ps[*n]).collect();
    if !security.is_empty() {
        return Err(format!(
            "reload refused, nothing applied: the port security (allowed / trusted) of port {} changed, which \
             cannot change while the switch runs: restart it (ports, security groups and [[fdb]] are applied live)",
            security.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let mut plan = PortPlan { out: Vec::new(), into: Vec::new() };
    for (name, t) in &was {
        if now.get(name) != Some(t) {
            let p = old.port.iter().find(|p| p.name.get_ref() == name).ok_or("a port of the old file")?;
            if p.role == Role::Uplink {
                return Err(format!(
                    "reload refused, nothing applied: the uplink {name} changed, which needs a restart"
                ));
            }
            plan.out.push(name.clone());
        }
    }
    for p in &new.port {
        let name = p.name.get_ref();
        if was.get(name) == now.get(name) {
            continue;
        }
        if p.role == Role::Uplink || p.allowed.is_some() || p.trusted || p.security_groups.is_some() {
            return Err(format!(
                "reload refused, nothing applied: port {name} is new or changed and has role = uplink, allowed, \
                 trusted or security_groups; a port plugged while the switch runs is an access port without \
                 them: restart the switch for it"
            ));
        }
        plan.into.push(Plugged::of(p));
    }
    Ok(plan)
}

/// The security groups of `c` and the ports' lists of them.
fn groups_of(c: &Config) -> (Vec<SecurityGroup>, Vec<PortGroups>) {
    (c.security_groups(), c.port_groups())
}

/// Reads the switch's config file again and applies the difference; on success its config
/// becomes the new one. Answers what was unplugged, plugged, removed and added.
pub fn reload(live: &mut Live<'_>) -> Result<Value, String> {
    let new = Config::load(&live.cfg.source.path).map_err(|e| format!("reload refused, nothing applied: {}", e.0))?;
    let (old_s, new_s) = (fixed_sections(&live.cfg.source.text), fixed_sections(&new.source.text));
    let mut changed: Vec<String> =
        old_s.keys().chain(new_s.keys()).filter(|k| old_s.get(*k) != new_s.get(*k)).cloned().collect();
    changed.sort();
    changed.dedup();
    if !changed.is_empty() {
        let list: Vec<String> = changed.iter().map(|k| format!("[{k}]")).collect();
        return Err(format!(
            "reload refused, nothing applied: {} changed, which needs a restart (only [[port]], [[fdb]], \
             [[security_group]] and the ports' security_groups are applied live)",
            list.join(", ")
        ));
    }
    let plan = port_plan(live.cfg, &new)?;
    let mut unplugged = Vec::new();
    for name in &plan.out {
        match live.port_del(&[name.as_str()]) {
            Ok(_) => unplugged.push(name.clone()),
            Err(e) => {
                return Err(format!(
                    "reload stopped: port {name} could not be unplugged: {e}; unplugged so far: {unplugged:?}"
                ))
            }
        }
    }
    let applied = |u: &[String], p: &[String]| format!("unplugged {u:?}, plugged {p:?}");
    let ctl = &mut *live.ctl;
    let cfg = &*live.cfg;
    let (old_g, new_g) = (groups_of(cfg), groups_of(&new));
    let sg_changed = old_g != new_g;
    if sg_changed {
        let (groups, ports) = new_g;
        ctl.replace_security_groups(groups, &ports).map_err(|e| match unplugged.is_empty() {
            true => format!("reload refused, nothing applied: {e}"),
            false => format!("reload stopped at the security groups: {e}; {}", applied(&unplugged, &[])),
        })?;
    }
    let mut plugged = Vec::new();
    for p in plan.into {
        let name = p.name.clone();
        match live.plug(p) {
            Ok(_) => plugged.push(name),
            Err(e) => {
                return Err(format!(
                    "reload stopped: port {name} could not be plugged: {e}; {}",
                    applied(&unplugged, &plugged)
                ))
            }
        }
    }
    let ctl = &mut *live.ctl;
    let cfg = &*live.cfg;
    let (mut was, now) = (statics(cfg), statics(&new));
    // The entries of an unplugged port went with it: those the file still has come back.
    was.retain(|_, v| v.0.as_ref().is_none_or(|p| !unplugged.contains(p)));
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
            "reload applied in part: {}, {} removed, {} added, security groups {}; failed: {}",
            applied(&unplugged, &plugged),
            removed.len(),
            added.len(),
            if sg_changed { "replaced" } else { "unchanged" },
            failed.join("; ")
        ));
    }
    *live.cfg = new;
    Ok(json!({"unplugged": unplugged, "plugged": plugged, "removed": removed, "added": added,
        "security_groups": if sg_changed { "replaced" } else { "unchanged" }}))
}
