//! A real Linux guest (QEMU, the standard virtio-net driver, `../shared/vm/run-guest.sh`) on a
//! fastpath vhost-user port pings through fastpath:
//! - to the host kernel: guest <-> vhost-user <-> fastpath l2fwd <-> tap <-> the kernel (in a
//!   network namespace of the test's own);
//! - to DPDK testpmd in `icmpecho` mode on a second vhost-user port (net_virtio_user).
//!
//! QEMU runs under TCG where KVM cannot (6-10 s per guest). The tests hold the suite's
//! busy-poller lock. CPUs: testpmd (both lcores) on CPU 0; fastpath's lcore (adaptive idle) and
//! QEMU on CPU 1, where fastpath gives the CPU away whenever its queues are empty.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FASTPATH: &str = env!("CARGO_BIN_EXE_fastpath");

fn shared(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(p)
}

struct Kid(Option<Child>);

impl Kid {
    fn interrupt_and_output(mut self) -> String {
        let c = self.0.take().expect("child");
        let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
        let out = c.wait_with_output().expect("wait");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The runtime folder testpmd leaves behind, removed at the end.
struct DpdkPrefix(String);

impl Drop for DpdkPrefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
    }
}

struct Paths(Vec<PathBuf>);

impl Drop for Paths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn wait_socket(p: &std::path::Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The VM rig's script, after checking the test's preconditions (`None`: skip, outside CI).
fn guest_rig(test: &str, cmds: &[&str]) -> Option<PathBuf> {
    if !fastpath_pmd::testutil::require(test, true, cmds) {
        return None;
    }
    let script = shared("vm/run-guest.sh");
    assert!(script.is_file() || !fastpath_pmd::testutil::in_ci(), "{} is missing", script.display());
    if !script.is_file() {
        eprintln!("SKIPPED {test}: {} is missing", script.display());
        return None;
    }
    Some(script)
}

/// Boots the guest (QEMU pinned to CPU 1) against `sock` and waits for its verdict.
fn boot_guest(script: &std::path::Path, sock: &std::path::Path) -> std::process::Output {
    Command::new("taskset")
        .args(["-c", "1", "bash"])
        .arg(script)
        .arg(sock)
        .env("FP_VM_TIMEOUT", "150")
        .output()
        .expect("run-guest.sh")
}

#[test]
fn vhost_user_qemu_guest_pings_through_fastpath() {
    let test = "vhost_user_qemu_guest_pings_through_fastpath";
    let _cpus = fastpath_pmd::testutil::pollers();
    let Some(script) = guest_rig(test, &["dpdk-testpmd", "qemu-system-x86_64", "taskset"]) else { return };
    let id = std::process::id();
    let guest = std::env::temp_dir().join(format!("fp-vu-guest-{id}.sock"));
    let echo = std::env::temp_dir().join(format!("fp-vu-echo-{id}.sock"));
    let _paths = Paths(vec![guest.clone(), echo.clone()]);
    let fp = Kid(Some(
        Command::new(FASTPATH)
            .args(["l2fwd", "--port", &format!("vhost-user:{}", guest.display())])
            .args(["--port", &format!("vhost-user:{}", echo.display())])
            .args(["--cores", "1", "--idle", "adaptive", "--duration", "170", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fastpath"),
    ));
    wait_socket(&echo);
    let _prefix = DpdkPrefix(format!("fpvuecho{id}"));
    // testpmd answers ARP and ICMP echo requests (forward mode icmpecho).
    let tp = Kid(Some(
        Command::new("dpdk-testpmd")
            .args(["--lcores", "(0,1)@0", "--main-lcore", "1", "--no-huge", "-m", "1024", "--no-pci"])
            .arg("--log-level=*:error")
            .arg("--file-prefix")
            .arg(format!("fpvuecho{id}"))
            .arg(format!("--vdev=net_virtio_user0,mac=00:01:02:03:04:05,path={},queues=1", echo.display()))
            .args(["--", "--forward-mode=icmpecho", "--nb-cores=1", "--stats-period", "1", "--auto-start"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start testpmd"),
    ));
    let run = boot_guest(&script, &guest);
    let guest_out = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    let tp_out = tp.interrupt_and_output();
    let out = fp.interrupt_and_output();
    let (ports, pool) = parse_report(&out);
    let last = guest_out.lines().last().unwrap_or_default();
    assert!(
        run.status.success() && last.starts_with("PASS"),
        "guest test failed:\n{guest_out}\nfastpath:\n{out}\ntestpmd:\n{}",
        tp_out.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(replies(&guest_out) >= 1, "{guest_out}");
    assert_eq!(ports.len(), 2, "{out}");
    let g = &ports[0];
    let x = |k: &str| g["xstats"][k].as_u64().unwrap_or(0);
    assert!(g["rx_packets"].as_u64().unwrap_or(0) >= 5, "guest packets reached fastpath:\n{out}");
    assert!(g["tx_packets"].as_u64().unwrap_or(0) >= 5, "replies reached the guest:\n{out}");
    assert!(x("q0_tx_guest_calls") > 0, "the guest (interrupt driven) was called:\n{out}");
    let errs: u64 = ports
        .iter()
        .flat_map(|p| p["xstats"].as_object().unwrap().iter())
        .filter(|(k, _)| k.contains("guest_err"))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(errs, 0, "{out}");
    assert_eq!(pool["available"], pool["capacity"], "every mbuf back in the pool:\n{out}");
}

/// The echo replies the guest counted, from the rig's `PASS: ping PEER: N/5 replies` line; a
/// line that does not parse fails the test.
fn replies(guest_out: &str) -> u32 {
    let line = guest_out.lines().find(|l| l.starts_with("PASS: ping ")).unwrap_or_else(|| panic!("{guest_out}"));
    let n = line.rsplit_once(": ").and_then(|(_, r)| r.split('/').next()).unwrap_or_default();
    n.parse().unwrap_or_else(|_| panic!("unparsable ping line '{line}'"))
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn parse_report(out: &str) -> (Vec<Value>, Value) {
    let mut ports = Vec::new();
    let mut pool = Value::Null;
    for l in out.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(l) {
            if v.get("driver").is_some() {
                ports.push(v);
            } else if v.get("mempool").is_some() {
                pool = v;
            }
        }
    }
    (ports, pool)
}

#[test]
fn vhost_user_qemu_guest_pings_the_host_through_tap() {
    let test = "vhost_user_qemu_guest_pings_the_host_through_tap";
    let _cpus = fastpath_pmd::testutil::pollers();
    let Some(script) = guest_rig(test, &["qemu-system-x86_64", "ip", "taskset"]) else { return };
    let id = std::process::id();
    let ns = Netns(format!("fpvu{id}"));
    let tap = format!("fpvt{id}");
    assert!(Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
    let sock = std::env::temp_dir().join(format!("fp-vu-tap-{id}.sock"));
    let _paths = Paths(vec![sock.clone()]);
    // fastpath in the namespace, so that its TAP interface (and the address the guest pings)
    // is the test's own.
    let fp = Kid(Some(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, FASTPATH, "l2fwd"])
            .args(["--port", &format!("vhost-user:{}", sock.display()), "--port", &format!("tap:{tap}")])
            .args(["--cores", "1", "--idle", "adaptive", "--duration", "170", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fastpath"),
    ));
    wait_socket(&sock);
    let t0 = Instant::now();
    loop {
        let up = Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "show", &tap]).output().unwrap();
        if up.status.success() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the TAP interface {tap} did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [vec!["ip", "addr", "add", "10.0.0.1/24", "dev", &tap], vec!["ip", "link", "set", &tap, "up"]] {
        let st = Command::new("ip").args(["netns", "exec", &ns.0]).args(&args).status().unwrap();
        assert!(st.success(), "{args:?}");
    }
    let run = boot_guest(&script, &sock);
    let guest_out = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    // `ip netns exec` passes SIGINT on to fastpath, which then prints its report.
    let out = fp.interrupt_and_output();
    let (ports, pool) = parse_report(&out);
    let last = guest_out.lines().last().unwrap_or_default();
    assert!(run.status.success() && last.starts_with("PASS"), "guest test failed:\n{guest_out}\nfastpath:\n{out}");
    assert!(replies(&guest_out) >= 1, "{guest_out}");
    assert_eq!(ports.len(), 2, "{out}");
    let (vu, tp) = (&ports[0], &ports[1]);
    assert!(vu["rx_packets"].as_u64().unwrap_or(0) >= 5 && tp["tx_packets"].as_u64().unwrap_or(0) >= 5, "{out}");
    assert!(tp["rx_packets"].as_u64().unwrap_or(0) >= 5 && vu["tx_packets"].as_u64().unwrap_or(0) >= 5, "{out}");
    assert!(vu["xstats"]["q0_tx_guest_calls"].as_u64().unwrap_or(0) > 0, "{out}");
    assert_eq!(pool["available"], pool["capacity"], "every mbuf back in the pool:\n{out}");
}
