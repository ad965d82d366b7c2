//! `fastpath vswitch` refuses a bad config before anything starts: each error names the file,
//! the line (where the error has one), the key and the problem, shows the accepted forms, and
//! exits with 2; a port that cannot be opened (an uplink whose interface is missing) is a clear
//! error naming the port and its line, exit 1.

use std::process::Command;

const GOOD: &str = r#"[vswitch]
idle = "adaptive"

[[bridge]]
name = "tenant-a"
vni = 100
tunnel = "vxlan"
local = "10.50.0.1"
remotes = ["10.50.0.2"]

[[port]]
name = "uplink"
spec = "af_xdp:IFACE"
role = "uplink"

[[port]]
name = "vm1"
spec = "vhost-user:SOCK"
bridge = "tenant-a"

[[fdb]]
bridge = "tenant-a"
mac = "02:00:00:00:00:09"
port = "vm1"

[[neighbour]]
ip = "10.50.0.2"
mac = "02:00:00:00:00:0a"
"#;

/// Runs the switch on `text` (written to a file of its own); returns (exit code, stderr, path).
fn run(tag: &str, text: &str) -> (Option<i32>, String, String) {
    let p = std::env::temp_dir().join(format!("fp-vs-cfg-{tag}-{}.toml", std::process::id()));
    std::fs::write(&p, text).expect("write config");
    let out = vswitch(&p, &["--duration", "1"]);
    let _ = std::fs::remove_file(&p);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), p.display().to_string())
}

/// `fastpath vswitch --ctl none --config PATH ARGS...` (no control socket: these run at once).
fn vswitch(path: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--ctl", "none", "--config"])
        .arg(path)
        .args(args)
        .output()
        .expect("run fastpath")
}

#[test]
fn vswitch_bad_configs_name_file_line_key_and_forms_and_exit_2() {
    // (what is changed in GOOD, what the message must say, the line it must name)
    let cases: &[((&str, &str), &str, Option<u32>)] = &[
        (("vni = 100", "vni = 100\ncolour = 3"), "unknown field `colour`", Some(7)),
        (("tunnel = \"vxlan\"", "tunnel = \"gre\""), "unknown variant `gre`", Some(7)),
        (("local = \"10.50.0.1\"", "local = \"10.50.0\""), "invalid IP address syntax", Some(8)),
        (("vni = 100", "vni = \"100\""), "invalid type", Some(6)),
        (
            ("bridge = \"tenant-a\"\n\n[[fdb]]", "bridge = \"nope\"\n\n[[fdb]]"),
            "bridge 'nope' is not defined",
            Some(19),
        ),
        (("mac = \"02:00:00:00:00:09\"", "mac = \"02:00\""), "'02:00' is not a MAC address", Some(23)),
        (("vni = 100", "vni = 16777216"), "vni = 16777216: use 0..=16777215", Some(5)),
        (("port = \"vm1\"", "port = \"vm1\"\nvtep = \"10.50.0.2\""), "give exactly one of port", Some(22)),
        (("port = \"vm1\"", "port = \"vm9\""), "[[fdb]] port 'vm9' is not defined", Some(24)),
        (("role = \"uplink\"", ""), "need a [[port]] with role = \"uplink\"", None),
        (("role = \"uplink\"", "role = \"trunk\""), "unknown variant `trunk`", Some(14)),
        (("remotes = [\"10.50.0.2\"]", "remotes = [\"2001:db8::2\"]"), "is not of local's family", Some(5)),
        (("ip = \"10.50.0.2\"", "ip = \"10.50.0.3\""), "[[neighbour]] 10.50.0.3: not a VTEP", Some(27)),
        (("name = \"vm1\"", "name = \"uplink\""), "[[port]] name = 'uplink': empty or used twice", Some(17)),
        (("idle = \"adaptive\"", "idle = \"lazy\""), "unknown variant `lazy`", Some(2)),
        (("idle = \"adaptive\"", "burst = 0"), "[vswitch] burst = 0: use 1..=256", None),
        (("idle = \"adaptive\"", "fdb_aging = 0"), "fdb_size and fdb_aging must be positive", None),
        (
            ("bridge = \"tenant-a\"\n\n[[fdb]]", "bridge = \"tenant-a\"\nvlan = 4095\n\n[[fdb]]"),
            "vlan = 4095",
            Some(17),
        ),
        (("vni = 100", "vni = 100\nvni = 200"), "duplicate key", Some(7)),
        (("role = \"uplink\"", "role = \"uplink\"\nmac = \"02:00\""), "'02:00' is not a MAC address", Some(15)),
        (
            ("bridge = \"tenant-a\"\n\n[[fdb]]", "bridge = \"tenant-a\"\nsecurity_groups = [\"web\"]\n\n[[fdb]]"),
            "[[port]] 'vm1': security group 'web' is not defined",
            Some(20),
        ),
        (
            ("[[fdb]]", "[[security_group]]\nname = \"web\"\n[[security_group.rule]]\ndirection = \"up\"\n\n[[fdb]]"),
            "unknown variant `up`, expected `ingress` or `egress`",
            Some(24),
        ),
    ];
    for (i, ((from, to), want, line)) in cases.iter().enumerate() {
        assert!(GOOD.contains(from), "case {i}: GOOD has no '{from}'");
        let text = GOOD.replacen(from, to, 1);
        let (code, err, path) = run(&format!("c{i}"), &text);
        let ctx = format!("case {i} ({from:?} -> {to:?}):\n{err}");
        assert_eq!(code, Some(2), "a usage error: {ctx}");
        assert!(err.contains(&path), "the file: {ctx}");
        assert!(err.contains(want), "the problem '{want}': {ctx}");
        if let Some(l) = line {
            assert!(err.contains(&format!("{path}: line {l}")), "line {l}: {ctx}");
        }
        assert!(err.contains("accepted:") && err.contains("[[bridge]] name = \"NAME\""), "the forms: {ctx}");
    }
    // Not TOML at all, and no file.
    let (code, err, path) = run("nottoml", "[[bridge]\nname = 1");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("{path}: line 1")), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["vswitch", "--config", "/nonexistent/vs.toml"])
        .output()
        .expect("run fastpath");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/vs.toml: cannot read the config"), "{err}");
}

#[test]
fn vswitch_uplink_whose_interface_is_missing_is_an_error_naming_the_port() {
    let test = "vswitch_uplink_whose_interface_is_missing_is_an_error_naming_the_port";
    if !fastpath_pmd::testutil::require(test, true, &[]) {
        return;
    }
    let sock = std::env::temp_dir().join(format!("fp-vs-cfg-{}.sock", std::process::id()));
    let text = GOOD.replace("IFACE", "fpvsnone0").replace("SOCK", sock.to_str().unwrap());
    let (code, err, path) = run("noiface", &text);
    let _ = std::fs::remove_file(&sock);
    assert_eq!(code, Some(1), "a failure to open, not a usage error:\n{err}");
    assert!(err.contains(&format!("{path}: line 12: [[port]] 'uplink' cannot be opened")), "{err}");
    assert!(err.contains("fpvsnone0"), "the interface is named:\n{err}");
    assert!(!err.contains("rx queues on lcores"), "nothing started:\n{err}");
}

#[test]
fn vswitch_uplink_without_a_mac_of_its_own_takes_one_from_the_config() {
    // A null port has no MAC; the VTEP needs one for its tunnels and ARP answers.
    let _cpus = fastpath_pmd::testutil::pollers();
    let sock = std::env::temp_dir().join(format!("fp-vs-cfg-mac-{}.sock", std::process::id()));
    let text = GOOD.replace("af_xdp:IFACE", "null,no-rx=on").replace("SOCK", sock.to_str().unwrap());
    let (code, err, _) = run("nomac", &text);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("port uplink: the uplink has no unicast MAC address"), "{err}");
    let text = text.replace("role = \"uplink\"", "role = \"uplink\"\nmac = \"02:00:0a:32:00:01\"");
    let p = std::env::temp_dir().join(format!("fp-vs-cfg-mac-{}.toml", std::process::id()));
    std::fs::write(&p, text.replace("idle = \"adaptive\"", "idle = \"adaptive\"\ncores = \"1\"")).unwrap();
    let out = vswitch(&p, &["--duration", "0.5", "--json"]);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_file(&sock);
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{o}{e}");
    assert!(o.contains("\"stopped_by\":\"duration\""), "{o}");
}

#[test]
fn vswitch_the_worked_compute_host_example_is_a_valid_config() {
    // It names eth1, which this machine need not have: the config is accepted (no exit 2) and the
    // run stops at the first port it cannot open, naming it (exit 1).
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vswitch/compute-host.toml");
    let out = vswitch(&p, &["--duration", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return; // a machine with eth1 and the sockets' folder: it ran.
    }
    assert_eq!(out.status.code(), Some(1), "the example is a valid config:\n{err}");
    assert!(err.contains("[[port]] 'uplink' cannot be opened"), "{err}");
}

#[test]
fn vswitch_security_groups_run_and_report_their_zones() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let text = r#"[vswitch]
idle = "adaptive"
cores = "1"
conntrack_size = 1024

[[bridge]]
name = "lan"

[[port]]
name = "vm1"
spec = "null,no-rx=on"
bridge = "lan"
security_groups = ["web"]

[[port]]
name = "vm2"
spec = "null,no-rx=on"
bridge = "lan"

[[security_group]]
name = "web"
[[security_group.rule]]
direction = "ingress"
protocol = "tcp"
port_min = 22
[[security_group.rule]]
direction = "egress"
"#;
    let p = std::env::temp_dir().join(format!("fp-vs-cfg-sg-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    let out = vswitch(&p, &["--duration", "0.5", "--json"]);
    let _ = std::fs::remove_file(&p);
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{o}{e}");
    assert!(o.contains("\"conntrack_zone\":\"lan\""), "a zone per bridge: {o}");
    assert!(o.contains("\"conntrack_entries\":0"), "{o}");
}

#[test]
fn vswitch_stats_prints_each_ports_rates_every_period() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let text = "[vswitch]\nidle = \"adaptive\"\ncores = \"1\"\nmbufs = 4096\n\n[[bridge]]\nname = \"lan\"\n\n\
                [[port]]\nname = \"a\"\nspec = \"null\"\nbridge = \"lan\"\n\n\
                [[port]]\nname = \"b\"\nspec = \"null,no-rx=on\"\nbridge = \"lan\"\n";
    let p = std::env::temp_dir().join(format!("fp-vs-cfg-stats-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    let out = vswitch(&p, &["--duration", "1.5", "--stats", "0.25"]);
    let _ = std::fs::remove_file(&p);
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{o}{e}");
    // Port 0 receives without end: its lines show a rate; port 1 receives nothing.
    let lines = |port: &str| o.lines().filter(|l| l.starts_with(&format!("port {port} null"))).collect::<Vec<_>>();
    let (a, b) = (lines("0"), lines("1"));
    assert!(a.len() >= 3 && a.len() == b.len(), "a rate line per port every 0.25 s: {o}");
    assert!(a.iter().any(|l| !l.contains("rx    0.000 Mpps")), "port 0's rate: {a:?}");
    assert!(b.iter().all(|l| l.contains("rx    0.000 Mpps")), "port 1 receives nothing: {b:?}");
}
