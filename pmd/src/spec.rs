//! The text forms of ports and stages: `DRIVER[:POSITIONAL][,key=value|,flag]...` for ports,
//! `NAME[,key=value|,flag]...` for stages. Parsing is strict: an unknown key, a repeated key or a
//! bad value is an error that names the bad part and shows the accepted form.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A parsed spec. Values are consumed with the `take_*` methods; [`Spec::finish`] then rejects
/// anything left over.
#[derive(Debug, Clone)]
pub struct Spec {
    /// What it is (`port` or `stage`), for messages.
    pub kind: &'static str,
    /// The full text.
    pub raw: String,
    /// Driver or stage name.
    pub name: String,
    /// The item after `:` that has no `=` (interface, path, ring name).
    pub positional: Option<String>,
    items: Vec<(String, Option<String>, bool)>,
    accepted: String,
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Spec {
    /// Parses a port spec `DRIVER[:POSITIONAL|:key=value][,key=value|,flag]...`.
    pub fn parse_port(s: &str) -> Result<Spec, Error> {
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => match s.split_once(',') {
                Some((n, r)) => (n, Some(r)),
                None => (s, None),
            },
        };
        Self::build("port", s, name, rest, true)
    }

    /// Parses a stage spec `NAME[,key=value|,flag]...`.
    pub fn parse_stage(s: &str) -> Result<Spec, Error> {
        let (name, rest) = match s.split_once(',') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        Self::build("stage", s, name, rest, false)
    }

    fn build(kind: &'static str, raw: &str, name: &str, rest: Option<&str>, positional: bool) -> Result<Spec, Error> {
        let mut spec = Spec {
            kind,
            raw: raw.to_string(),
            name: name.trim().to_string(),
            positional: None,
            items: Vec::new(),
            accepted: String::new(),
        };
        if spec.name.is_empty() {
            return Err(spec.error("the name is missing", None));
        }
        if let Some(rest) = rest {
            for (i, item) in rest.split(',').enumerate() {
                if item.is_empty() {
                    return Err(spec.error("an empty item (two commas, or a trailing comma)", None));
                }
                match item.split_once('=') {
                    Some((k, v)) => {
                        if k.is_empty() {
                            return Err(spec.error(&format!("'{item}' has no key before '='"), None));
                        }
                        spec.items.push((k.to_string(), Some(v.to_string()), false));
                    }
                    None if i == 0 && positional => spec.positional = Some(item.to_string()),
                    None => spec.items.push((item.to_string(), None, false)),
                }
            }
        }
        Ok(spec)
    }

    /// Sets the accepted form shown in errors.
    pub fn accepting(mut self, form: &str) -> Spec {
        self.accepted = form.to_string();
        self
    }

    /// An error about this spec.
    pub fn error(&self, problem: &str, accepted: Option<&str>) -> Error {
        Error::Spec {
            kind: self.kind,
            spec: self.raw.clone(),
            problem: problem.to_string(),
            accepted: accepted.map(str::to_string).unwrap_or_else(|| self.accepted.clone()),
        }
    }

    fn take_raw(&mut self, key: &str) -> Result<Option<(Option<String>, usize)>, Error> {
        let mut found = None;
        for (i, (k, v, used)) in self.items.iter_mut().enumerate() {
            if k == key {
                if found.is_some() {
                    let msg = format!("'{key}' is given twice");
                    return Err(self.error(&msg, None));
                }
                *used = true;
                found = Some((v.clone(), i));
            }
        }
        Ok(found)
    }

    /// Takes `key=value` as a string.
    pub fn take_str(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.take_raw(key)? {
            None => Ok(None),
            Some((Some(v), _)) if !v.is_empty() => Ok(Some(v)),
            Some(_) => Err(self.error(&format!("'{key}' needs a value ({key}=...)"), None)),
        }
    }

    /// Takes `key=value` parsed as `T`, checked against `lo..=hi`.
    pub fn take_num<T>(&mut self, key: &str, lo: T, hi: T) -> Result<Option<T>, Error>
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let Some(v) = self.take_str(key)? else { return Ok(None) };
        match parse_num::<T>(&v) {
            Some(n) if n >= lo && n <= hi => Ok(Some(n)),
            _ => Err(self.error(&format!("{key}={v} is not a number in {lo}..={hi}"), None)),
        }
    }

    /// Takes a value parsed by `f`, whose error string names what is expected.
    pub fn take_with<T>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, Error> {
        let Some(v) = self.take_str(key)? else { return Ok(None) };
        f(&v).map(Some).map_err(|e| self.error(&format!("{key}={v}: {e}"), None))
    }

    /// Takes every value of a repeatable key, in order.
    pub fn take_all(&mut self, key: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (k, v, used) in self.items.iter_mut() {
            if k == key {
                *used = true;
                match v {
                    Some(v) if !v.is_empty() => out.push(v.clone()),
                    _ => {
                        let msg = format!("'{key}' needs a value ({key}=...)");
                        return Err(self.error(&msg, None));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Takes an on/off switch: `key`, `key=on|off|true|false|1|0|yes|no`.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, Error> {
        match self.take_raw(key)? {
            None => Ok(None),
            Some((None, _)) => Ok(Some(true)),
            Some((Some(v), _)) => match v.as_str() {
                "on" | "true" | "1" | "yes" => Ok(Some(true)),
                "off" | "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(self.error(&format!("{key}={v}: expected on or off"), None)),
            },
        }
    }

    /// Takes a value that must be one of `choices`.
    pub fn take_choice(&mut self, key: &str, choices: &[&'static str]) -> Result<Option<&'static str>, Error> {
        let Some(v) = self.take_str(key)? else { return Ok(None) };
        match choices.iter().find(|c| **c == v) {
            Some(c) => Ok(Some(c)),
            None => Err(self.error(&format!("{key}={v}: expected one of {}", choices.join(", ")), None)),
        }
    }

    /// Rejects any item not taken, and a positional item unless `positional_ok`.
    pub fn finish(&self, positional_ok: bool) -> Result<(), Error> {
        if !positional_ok {
            if let Some(p) = &self.positional {
                return Err(self.error(&format!("unexpected '{p}'"), None));
            }
        }
        if let Some((k, v, _)) = self.items.iter().find(|(_, _, used)| !used) {
            let what = match v {
                Some(v) => format!("unknown key '{k}' (in '{k}={v}')"),
                None => format!("unknown item '{k}'"),
            };
            return Err(self.error(&what, None));
        }
        Ok(())
    }
}

/// Parses a CPU or count list: `0`, `0,1`, `0-3`, `1-3,5` (no repeats).
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let bad = || format!("'{part}' in '{s}' is not a number or a range like 0-3 (use e.g. 0,1 or 0-1)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().map_err(|_| bad())?),
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = v.iter().find(|x| !seen.insert(**x)) {
        return Err(format!("{d} appears twice in '{s}'"));
    }
    Ok(v)
}

/// Parses decimal or `0x` hexadecimal numbers, with `k`/`m` suffixes for integers.
pub fn parse_num<T: FromStr>(s: &str) -> Option<T> {
    if let Some(h) = s.strip_prefix("0x") {
        let v = u64::from_str_radix(h, 16).ok()?;
        return v.to_string().parse().ok();
    }
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000u64),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1_000_000u64),
        _ => (s, 1),
    };
    if mul != 1 {
        let v: u64 = num.parse().ok()?;
        return v.checked_mul(mul)?.to_string().parse().ok();
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        let mut s = Spec::parse_port("ring:a,peer=b,size=1k").unwrap();
        assert_eq!(s.name, "ring");
        assert_eq!(s.positional.as_deref(), Some("a"));
        assert_eq!(s.take_str("peer").unwrap().as_deref(), Some("b"));
        assert_eq!(s.take_num::<u32>("size", 2, 65536).unwrap(), Some(1000));
        s.finish(true).unwrap();

        let mut s = Spec::parse_port("pcap:rx=in.pcap,tx=out.pcap").unwrap();
        assert!(s.positional.is_none());
        assert_eq!(s.take_str("rx").unwrap().as_deref(), Some("in.pcap"));
        assert_eq!(s.take_str("tx").unwrap().as_deref(), Some("out.pcap"));
        s.finish(false).unwrap();

        let s = Spec::parse_port("null").unwrap();
        assert_eq!(s.name, "null");
        s.finish(false).unwrap();
        let mut s = Spec::parse_port("null,size=128").unwrap();
        assert_eq!(s.take_num::<u32>("size", 60, 1600).unwrap(), Some(128));
    }

    #[test]
    fn errors_name_the_bad_part() {
        let mut s = Spec::parse_port("null,siz=3").unwrap().accepting("null[,size=N]");
        assert_eq!(s.take_num::<u32>("size", 1, 9).unwrap(), None);
        let e = s.finish(false).unwrap_err().to_string();
        assert!(e.contains("unknown key 'siz'") && e.contains("null[,size=N]"), "{e}");
        let mut s = Spec::parse_stage("macswap,x=1,x=2").unwrap();
        let e = s.take_str("x").unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        let mut s = Spec::parse_port("null,size=abc").unwrap();
        let e = s.take_num::<u32>("size", 60, 1600).unwrap_err().to_string();
        assert!(e.contains("size=abc is not a number in 60..=1600"), "{e}");
        assert!(Spec::parse_port("null,,").is_err());
        assert!(Spec::parse_stage("").is_err());
        let mut s = Spec::parse_stage("x,on=maybe").unwrap();
        assert!(s.take_bool("on").is_err());
    }
}
