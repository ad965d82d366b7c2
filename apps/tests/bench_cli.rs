//! `fastpath bench`: output shape (table, JSON, SVG) and argument errors. Functional only: the
//! figures themselves are measured by running the command, never asserted here.

use std::process::Command;

fn fastpath(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fastpath")).args(args).output().unwrap()
}

#[test]
fn json_and_plot() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("p.svg");
    let o = fastpath(&[
        "bench",
        "--pipeline",
        "io",
        "--pipeline",
        "macswap",
        "--cores",
        "1",
        "--seconds",
        "0.3",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (l, name) in lines.iter().zip(["io", "macswap"]) {
        assert_eq!(l["pipeline"], name);
        assert_eq!(l["cores"], 1);
        for k in ["mpps", "mpps_per_core"] {
            assert!(l[k].as_f64().unwrap() > 0.0, "{k} in {l}");
        }
        assert_eq!(l["efficiency"].as_f64(), Some(1.0), "the 1-core point against itself: {l}");
    }
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg") && s.contains("macswap"));
}

#[test]
fn table_and_list() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let o = fastpath(&["bench", "--pipeline", "io", "--cores", "1", "--seconds", "0.2"]);
    assert!(o.status.success());
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.lines().next().unwrap().contains("efficiency"));
    assert!(t.lines().any(|l| l.starts_with("io ")));
    // Without a 1-core point there is nothing to measure efficiency against: none is shown.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        let o = fastpath(&["bench", "--pipeline", "io", "--cores", "2", "--seconds", "0.2", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(l["cores"], 2);
        assert!(l["efficiency"].is_null(), "{l}");
    }
    let o = fastpath(&["bench", "--list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("macswap"));
}

#[test]
fn errors() {
    for (args, needle) in [
        (vec!["bench", "--pipeline", "nope"], "unknown pipeline; known: io"),
        (vec!["bench", "--cores", "0"], "0 cores asked"),
        (vec!["bench", "--cores", "99"], "--cores lists core counts"),
        (vec!["bench", "--seconds=-1"], "--seconds"),
        (vec!["bench", "--burst", "300"], "--burst 300"),
    ] {
        let o = fastpath(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}
