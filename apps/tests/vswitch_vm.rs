//! VMs on the vswitch's vhost-user ports (as root):
//!
//! - a QEMU guest (`../shared/vm/run-guest.sh`: Debian's kernel, the standard virtio-net
//!   driver) pings a host behind a kernel VXLAN VTEP: guest -> vhost-user -> fastpath (learn,
//!   encap) -> af_xdp uplink -> Linux's VXLAN device, and back;
//! - a "VM" (DPDK testpmd `net_virtio_user`, two ports in `mac` forwarding with `--eth-peer`
//!   set crosswise, as in the PVP benchmark) on two vhost-user ports of one bridge: it is
//!   killed mid-traffic and comes back; the ports keep their place (no MAC moves, the same
//!   FDB) and its frames circulate again.
//!
//! Counts, never rates. CPUs: fastpath's lcore on CPU 1 with `idle = "adaptive"`; QEMU under
//! `taskset -c 1` (TCG), testpmd's lcores both on CPU 0. The tests hold the suite's
//! busy-poller lock.

#[path = "../../pmd/tests/common/mod.rs"]
mod common;
mod vswitch_rig;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Reap;
use vswitch_rig::*;

fn shared(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(p)
}

#[test]
fn vswitch_qemu_guest_pings_a_host_behind_a_kernel_vxlan_vtep() {
    let test = "vswitch_qemu_guest_pings_a_host_behind_a_kernel_vxlan_vtep";
    if !require(test, &["qemu-system-x86_64", "taskset"]) {
        return;
    }
    let script = shared("vm/run-guest.sh");
    if !script.is_file() {
        assert!(!fastpath_pmd::testutil::in_ci(), "{} is missing", script.display());
        eprintln!("SKIPPED {test}: {} is missing", script.display());
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let und = Underlay::new();
    let vtep = und.station(Some("10.63.0.2"));
    vtep.overlay(Kind::Vxlan, "vx100", 100, "172.19.0.2/24", None);
    let dir = Scratch::new("vm");
    let sock = dir.path("vm.sock");
    let cfg = one_bridge(Kind::Vxlan, &und.uplink, "vm", &format!("vhost-user:{}", sock.display()));
    let mut vs = Vswitch::start(&cfg);
    // The guest's MTU stays 1500: its pings are small (a real deployment gives it 1450, see
    // docs/vswitch.md).
    let run = Command::new("taskset")
        .args(["-c", "1", "bash"])
        .arg(&script)
        .arg(&sock)
        .env("FP_VM_TIMEOUT", "150")
        .env("FP_VM_GUEST_IP", "172.19.0.3/24")
        .env("FP_VM_PEER_IP", "172.19.0.2")
        .output()
        .expect("run-guest.sh");
    let guest = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    let last = guest.lines().last().unwrap_or_default();
    if !(run.status.success() && last.starts_with("PASS")) {
        vs.fail(&format!("the guest's test failed:\n{guest}"));
    }
    let r = vs.stop();
    let vm = format!("vhost-user:{}", sock.display());
    assert!(r.port(&vm, "rx_packets") >= 5 && r.port(&vm, "tx_packets") >= 5, "{guest}\n{}", r.text);
    assert!(r.stage("switch-egress", "stats/encapsulated") >= 5, "{}", r.text);
    assert!(r.stage("switch-underlay", "stats/decapsulated") >= 5, "{}", r.text);
    // The guest's MAC (QEMU's default in the rig) behind the VM port, the kernel host's behind
    // the VTEP.
    assert_eq!(r.sport("vm", "macs"), 1, "{}", r.text);
    assert_eq!(r.bridge("overlay", "learned"), 2, "{}", r.text);
    r.check_pool();
}

/// testpmd as a two-port VM (CPU 0) on `s0` and `s1`, `mac` forwarding with the peers
/// crosswise: port 0 sends from ..:01 to ..:02, port 1 from ..:02 to ..:01.
struct Vm {
    kid: Reap,
    log: PathBuf,
    prefix: String,
}

impl Vm {
    fn start(tag: &str, dir: &Scratch, s0: &str, s1: &str) -> Vm {
        let prefix = format!("fpvsvm{tag}{}", std::process::id());
        let log = dir.path(&format!("testpmd-{tag}.log"));
        let vdevs =
            [format!("mac=00:00:00:00:00:01,path={s0},queues=1"), format!("mac=00:00:00:00:00:02,path={s1},queues=1")];
        let args = ["--eth-peer=0,00:00:00:00:00:02", "--eth-peer=1,00:00:00:00:00:01", "--tx-first"].map(String::from);
        let c = testpmd_virtio_user(&prefix, &vdevs, &args, &log);
        Vm { kid: Reap(Some(c)), log, prefix }
    }

    /// The largest cumulative RX-packets it printed (any port).
    fn rx(&self) -> u64 {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        t.split("RX-packets:")
            .skip(1)
            .filter_map(|r| r.split_whitespace().next().and_then(|w| w.parse::<u64>().ok()))
            .max()
            .unwrap_or(0)
    }

    fn wait_rx(&self, n: u64) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < DEADLINE {
            if self.rx() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        drop(self.kid.0.take().map(|mut c| {
            let _ = c.kill();
            c.wait()
        }));
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// Frames the VM must get back through the switch, per life.
const FRAMES: u64 = 100_000;

#[test]
fn vswitch_vm_that_goes_away_keeps_its_place_and_gets_traffic_again() {
    let test = "vswitch_vm_that_goes_away_keeps_its_place_and_gets_traffic_again";
    if !fastpath_pmd::testutil::require(test, true, &["dpdk-testpmd", "stdbuf"]) {
        return;
    }
    let _cpus = fastpath_pmd::testutil::pollers();
    let dir = Scratch::new("rc");
    let (s0, s1) = (dir.path("vm0.sock"), dir.path("vm1.sock"));
    let (s0, s1) = (s0.to_str().unwrap(), s1.to_str().unwrap());
    let cfg = format!(
        r#"
[vswitch]
idle = "adaptive"

[[bridge]]
name = "pvp"

[[port]]
name = "vm0"
spec = "vhost-user:{s0}"
bridge = "pvp"

[[port]]
name = "vm1"
spec = "vhost-user:{s1}"
bridge = "pvp"
"#
    );
    let mut vs = Vswitch::start(&cfg);
    let vm = Vm::start("a", &dir, s0, s1);
    if !vm.wait_rx(FRAMES) {
        let l = vm.log();
        drop(vm);
        vs.fail(&format!("the VM did not get {FRAMES} frames back:\n{l}"));
    }
    // Killed mid-traffic (no goodbye, its rings full), then a new one on the same sockets.
    drop(vm);
    let vm = Vm::start("b", &dir, s0, s1);
    if !vm.wait_rx(FRAMES) {
        let l = vm.log();
        drop(vm);
        vs.fail(&format!("the VM that came back did not get {FRAMES} frames:\n{l}"));
    }
    drop(vm);
    let r = vs.stop();
    for p in [s0, s1] {
        let rec = r.rec("name", &format!("vhost-user:{p}"));
        assert_eq!(rec["xstats"]["connections"], 2, "{}", r.text);
        assert!(r.get(rec, "rx_packets") >= FRAMES && r.get(rec, "tx_packets") >= FRAMES, "{}", r.text);
    }
    // The same two MACs on the same two ports in both lives: learned once, never moved.
    assert_eq!(r.bridge("pvp", "learned"), 2, "{}", r.text);
    assert_eq!(r.bridge("pvp", "moved"), 0, "{}", r.text);
    assert_eq!(r.sport("vm0", "macs"), 1, "{}", r.text);
    assert_eq!(r.sport("vm1", "macs"), 1, "{}", r.text);
    assert!(r.stage("switch-forward", "stats/known") >= 2 * FRAMES, "{}", r.text);
    r.check_pool();
}
