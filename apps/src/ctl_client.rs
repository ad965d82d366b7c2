//! `fastpath ctl`: sends one request to a running vswitch's control socket and prints the
//! answer, as tables for people or as one JSON line (`--json`) for scripts. `stats --watch
//! SECS` asks again every SECS seconds and prints each port's rates.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::CtlArgs;
use crate::vswitch::ctl::Request;
use crate::AppError;

/// How long the switch has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fastpath ctl`.
pub fn run(a: &CtlArgs) -> Result<(), AppError> {
    let mut words = a.words.clone();
    let watch = match words.iter().position(|w| w == "--watch") {
        Some(i) if words.first().map(String::as_str) == Some("stats") => {
            let secs = words.get(i + 1).and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0 && s.is_finite());
            let Some(secs) = secs else {
                return Err(AppError::Usage("stats --watch SECS: give a positive number of seconds".into()));
            };
            words.drain(i..i + 2);
            Some(secs)
        }
        _ => None,
    };
    let mut req = Request { cmd: words[0].clone(), args: words[1..].to_vec() };
    if req.cmd == "capture" && req.args.len() >= 3 {
        // The switch writes the file: a relative path is made ours.
        let f = std::path::absolute(&req.args[2]).map_err(|e| AppError::Usage(format!("{}: {e}", req.args[2])))?;
        req.args[2] = f.display().to_string();
    }
    let mut conn = Conn::open(&a.socket)?;
    let Some(secs) = watch else {
        let result = conn.ask(&req)?;
        if a.json {
            println!("{result}");
        } else {
            print!("{}", render(&result));
        }
        return Ok(());
    };
    let mut last: Option<(Instant, Value)> = None;
    loop {
        let now = (Instant::now(), conn.ask(&req)?);
        if let Some(prev) = &last {
            let rates = rates(prev, &now);
            if a.json {
                println!("{rates}");
            } else {
                print!("{}", table(rates.as_array().map_or(&[][..], Vec::as_slice)));
            }
            let _ = std::io::stdout().flush();
        }
        last = Some(now);
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

/// One connection to the switch.
struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Conn {
    fn open(path: &Path) -> Result<Conn, AppError> {
        let w = UnixStream::connect(path).map_err(|e| {
            AppError::Failed(format!(
                "cannot connect to {}: {e} (is fastpath vswitch running with --ctl {0}? may you open it?)",
                path.display()
            ))
        })?;
        let io = |e: std::io::Error| AppError::Failed(format!("{}: {e}", path.display()));
        w.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        let r = BufReader::new(w.try_clone().map_err(io)?);
        Ok(Conn { w, r })
    }

    /// Sends `req`; the result, or the switch's error.
    fn ask(&mut self, req: &Request) -> Result<Value, AppError> {
        let fail = |e: String| AppError::Failed(format!("the switch's control socket: {e}"));
        writeln!(self.w, "{}", req.to_line()).map_err(|e| fail(e.to_string()))?;
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => return Err(fail("closed without an answer".into())),
            Ok(_) => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| fail(format!("not JSON: {e}")))?;
        match (v["ok"].as_bool(), v["error"].as_str()) {
            (Some(true), _) => Ok(v["result"].clone()),
            (_, Some(e)) => Err(AppError::Failed(e.to_string())),
            _ => Err(fail(format!("an answer without ok nor error: {line}"))),
        }
    }
}

/// Each port's packet and bit rates between two `stats` results.
fn rates(a: &(Instant, Value), b: &(Instant, Value)) -> Value {
    let dt = (b.0 - a.0).as_secs_f64().max(1e-9);
    let empty = Vec::new();
    let (pa, pb) = (a.1["ports"].as_array().unwrap_or(&empty), b.1["ports"].as_array().unwrap_or(&empty));
    let rate = |x: &Value, y: &Value, k: &str, scale: f64| {
        let d = y[k].as_u64().unwrap_or(0).saturating_sub(x[k].as_u64().unwrap_or(0));
        ((d as f64 * scale / dt) * 10.0).round() / 10.0
    };
    pa.iter()
        .zip(pb)
        .map(|(x, y)| {
            serde_json::json!({"name": y["name"], "rx_pps": rate(x, y, "rx_packets", 1.0),
                "tx_pps": rate(x, y, "tx_packets", 1.0), "rx_bps": rate(x, y, "rx_bytes", 8.0),
                "tx_bps": rate(x, y, "tx_bytes", 8.0), "drops_ps": rate(x, y, "rx_drops", 1.0) + rate(x, y, "tx_drops", 1.0)})
        })
        .collect()
}

/// A result for people: a list of objects as a table, an object of lists as one table per
/// list under its name, a config's text as itself, anything else as JSON.
pub fn render(v: &Value) -> String {
    match v {
        Value::Object(o) if o.get("packets").is_some_and(Value::is_array) && o.contains_key("left") => trace(v),
        Value::Array(rows) if rows.iter().all(Value::is_object) => table(rows),
        Value::Object(o) if o.get("text").is_some_and(Value::is_string) => {
            format!("# {}\n{}", o.get("path").and_then(Value::as_str).unwrap_or(""), o["text"].as_str().unwrap_or(""))
        }
        Value::Object(o) => {
            let mut s = String::new();
            for (k, x) in o {
                match x {
                    Value::Array(rows) if rows.iter().all(Value::is_object) => s += &format!("{k}:\n{}", table(rows)),
                    _ => s += &format!("{k}: {}\n", cell(x)),
                }
            }
            s
        }
        Value::String(t) => format!("{t}\n"),
        _ => format!("{v}\n"),
    }
}

/// `trace show` for people: each packet, then a line per pass (as VPP's `show trace`).
fn trace(v: &Value) -> String {
    let mut s = String::new();
    for (i, p) in v["packets"].as_array().into_iter().flatten().enumerate() {
        s += &format!(
            "packet {}: {} on lcore {}, {} bytes, {}, {} cycles\n",
            i + 1,
            cell(&p["port"]),
            cell(&p["lcore"]),
            cell(&p["len"]),
            cell(&p["summary"]),
            cell(&p["cycles"])
        );
        for x in p["passes"].as_array().into_iter().flatten() {
            let c = x["cycles"].as_u64().map_or(String::new(), |c| format!("{c:>7} cycles"));
            let line = format!("  {:<11} {:<60} {c}", cell(&x["pass"]), cell(&x["decision"]));
            s += line.trim_end();
            s.push('\n');
        }
    }
    s + &format!("still to trace: {}, records lost: {}\n", cell(&v["left"]), cell(&v["lost"]))
}

/// Columns that lead when present, in this order; the others follow alphabetically.
const LEAD: &[&str] = &[
    "id",
    "lcore",
    "cpu",
    "name",
    "group",
    "rule",
    "direction",
    "ethertype",
    "protocol",
    "stage",
    "bridge",
    "vlan",
    "mac",
    "port",
    "queue",
    "vtep",
];

/// Rows of objects as aligned columns.
fn table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "(none)\n".into();
    }
    let mut cols: Vec<&str> = Vec::new();
    for r in rows {
        for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
            if !cols.contains(&k.as_str()) {
                cols.push(k);
            }
        }
    }
    cols.sort_by_key(|c| (LEAD.iter().position(|l| l == c).unwrap_or(LEAD.len()), c.to_string()));
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| cell(&r[*c])).collect()).collect();
    let width: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).max().unwrap_or(0).max(c.len()))
        .collect();
    let line = |v: Vec<&str>| {
        let s: Vec<String> = v.iter().zip(&width).map(|(x, w)| format!("{x:<w$}")).collect();
        s.join("  ").trim_end().to_string() + "\n"
    };
    let mut s = line(cols.clone());
    for r in &cells {
        s += &line(r.iter().map(String::as_str).collect());
    }
    s
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) => o.iter().map(|(k, x)| format!("{k}={}", cell(x))).collect::<Vec<_>>().join(" "),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_lead_with_names_and_align() {
        let t = table(&[json!({"rx": 1, "name": "vm1", "bridge": null}), json!({"rx": 12345, "name": "uplink0"})]);
        assert_eq!(t, "name     bridge  rx\nvm1      -       1\nuplink0  -       12345\n");
        assert_eq!(table(&[]), "(none)\n");
        assert_eq!(render(&json!({"path": "/x.toml", "text": "a = 1\n"})), "# /x.toml\na = 1\n");
        assert_eq!(cell(&json!({"no_segment": 3})), "no_segment=3");
    }
}
