//! Command-line definitions.

use clap::{Args, Parser, Subcommand};

/// fastpath: a poll-mode packet-processing framework.
#[derive(Parser, Debug)]
#[command(name = "fastpath", version, about, long_about = None, after_help = PORT_HELP)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    /// What to run.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Port and stage forms, shown after the help text.
pub const PORT_HELP: &str = "\
Port SPEC forms:
  null[,size=BYTES][,queues=N][,no-rx=on]         DPDK net_null: rx allocates frames, tx frees
  ring:NAME[,peer=NAME][,size=SLOTS][,fill=N]      in-memory ring (rx from NAME, tx to peer)
  pcap:rx=FILE[,tx=FILE][,infinite_rx=on] | pcap:tx=FILE  read / write a pcap file (infinite_rx: replay)
  tap:NAME[,vnet-hdr=on][,queues=N]                TAP interface (kernel exception path); vnet-hdr: offloads
  af_xdp:IFACE[,queues=N][,start-queue=Q][,mode=native|skb|auto][,bind=copy|zerocopy|auto][,busy-poll=on]
        [,ring-size=N][,replace=on][,attach=link|netlink]
                                                   AF_XDP sockets on a kernel interface (root)
  vhost-user:PATH[,client][,queues=N][,reconnect=SECS]
                                                   virtio-net for QEMU / DPDK virtio-user on a unix socket
                                                   (we listen on PATH; with client we connect to it)
Stage SPEC forms:
  io | macswap | drop
  vxlan-encap,vni=N,local=IP,remote=IP[,src-mac=M][,dst-mac=M][,port=4789][,ttl=N][,df=on][,udp-csum=on]
  geneve-encap,...                                 the vxlan-encap keys (port=6081), plus option=CLASS:TYPE:HEX...
  nvgre-encap,vni=VSID,local=IP,remote=IP[,src-mac=M][,dst-mac=M][,ttl=N][,df=on]
  vxlan-decap[,vni=N][,port=4789] | geneve-decap[,vni=N][,port=6081][,option=CLASS:TYPE]... | nvgre-decap[,vni=VSID]
  checksum[,mode=verify|fill|offload][,drop=on|off]   software checksums (verify flags and drops bad ones)
  ptype[,vxlan-port=4789][,geneve-port=6081]         fill packet type and header lengths
  lso[,mss=N][,mtu=N]                              TSO/USO in software, plain or tunnelled; mss/mtu also cut by size
  gro[,max=BYTES]                                  merge in-order TCP segments of a burst into one TSO packet
  tx-offload                                       software fallback for offloads the output port lacks
                                                   (appended by itself when some port lacks one)";

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Forward between paired ports (0<->1, 2<->3, ...; a lone last port sends back out of
    /// itself), through a pipeline.
    #[command(after_help = PORT_HELP)]
    L2fwd(L2fwdArgs),
    /// Measure pipelines over null ports on 1..N cores (core scaling).
    Bench(BenchArgs),
    /// Generate UDP traffic on a port; report loss and latency of the frames that come back.
    #[command(after_help = PORT_HELP)]
    Pktgen(PktgenArgs),
    /// The virtual switch of a compute host: bridges of VM, container and uplink ports, MAC
    /// learning, VXLAN / GENEVE / NVGRE overlays and VLANs, from a TOML config.
    #[command(after_help = VSWITCH_HELP)]
    Vswitch(VswitchArgs),
    /// Talk to a running vswitch through its control socket: show, stats, fdb, capture, trace,
    /// port / bridge / remote add and del, rxq rebalance, reload (docs/operations.md).
    #[command(after_help = CTL_HELP)]
    Ctl(CtlArgs),
}

/// The ctl commands, shown after its help.
pub const CTL_HELP: &str = "\
Commands:
  show ports | bridges | fdb [BRIDGE] | lcores | rxqs | neighbours | captures | config
  show security-groups | sg                 groups, their rules and ports, tracked connections per bridge
  stats [--watch SECS]                      every counter; --watch: port rates every SECS until ^C
  fdb add BRIDGE MAC port=NAME|vtep=IP [vlan=N]   add (or make static) a MAC entry
  fdb del BRIDGE MAC [vlan=N]               remove an entry
  fdb flush [BRIDGE]                        remove the learned entries
  capture PORT rx|tx|both FILE [count=N]    live pcap of a port (until N frames or capture stop)
  capture stop PORT | show captures
  trace add PORT N                          trace the next N packets received on PORT (at most 1000)
  trace show | trace clear                  each traced packet's passes, decisions and cycles
  port add NAME SPEC [bridge=NAME] [vlan=N] [mac=MAC]
                                            plug an access port into a bridge while the switch runs
  port del NAME                             unplug it (its MACs leave the FDB, its mbufs the lcores)
  bridge add NAME [vni=N] [tunnel=KIND] [local=IP] [remotes=IP,...] [vlan=N] [udp_port=N]
                                            add a bridge while the switch runs (on a tunnel it has)
  bridge del NAME                           delete a bridge without ports
  remote add|del BRIDGE IP                  a VTEP the bridge floods to (head-end replication)
  rxq rebalance                             place the rx queues on the lcores again by their cycles
  reload                                    read the config again, apply [[fdb]] and security group
                                            changes (also SIGHUP)
  help";

/// `fastpath ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The switch's control socket.
    #[arg(long, value_name = "PATH", default_value = crate::vswitch::ctl::DEFAULT_PATH)]
    pub socket: std::path::PathBuf,
    /// Print the response's result as JSON (one line) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The command and its words (see below).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub words: Vec<String>,
}

/// The vswitch config forms, shown after its help.
pub const VSWITCH_HELP: &str = "\
The config file (TOML; docs/vswitch.md has the reference and a worked example):
  [vswitch]  cores = \"LIST\", idle = \"busy\"|\"adaptive\", mbufs = N, burst = 1..=256, fdb_size = N,
             fdb_aging = SECS, mac_limit_bridge = N, mac_limit_port = N, idle_max_sleep_us = N,
             rebalance_interval = SECS, conntrack_size = N, conntrack_zone_limit = N,
             max_ports = N (ports at once, counting those plugged live; default 64)
  [[bridge]] name = \"NAME\", vni = 0..=16777215, tunnel = \"vxlan\"|\"geneve\"|\"nvgre\", local = \"IP\",
             remotes = [\"IP\", ...], vlan = 1..=4094, udp_port = 1..=65535
  [[port]]   name = \"NAME\", spec = \"SPEC\", role = \"access\"|\"uplink\", bridge = \"NAME\", vlan = 1..=4094
  [[fdb]]    bridge = \"NAME\", mac = \"aa:bb:cc:dd:ee:ff\", port = \"NAME\" | vtep = \"IP\", vlan = 1..=4094
  [[neighbour]] ip = \"IP\", mac = \"aa:bb:cc:dd:ee:ff\"   (a remote VTEP's MAC, instead of ARP / ND)
Port SPECs: as for l2fwd (fastpath l2fwd --help).";

/// `fastpath vswitch`.
#[derive(Args, Debug)]
pub struct VswitchArgs {
    /// The configuration file (TOML).
    #[arg(long, value_name = "FILE.toml")]
    pub config: std::path::PathBuf,
    /// CPUs for the lcores, e.g. 0 or 0,1 or 0-1 (default: the config's `cores`, else the first
    /// CPU this process may use). Every rx queue of every port is polled by one of them.
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print per-port rates every SECS seconds (0: only at the end).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub stats: f64,
    /// At the end, print one JSON object per line: each port, bridge, lcore, stage, the pool.
    #[arg(long)]
    pub json: bool,
    /// The control socket `fastpath ctl` talks to (its directory is created; `none`: no socket).
    /// A second switch on the same path is refused. Default: /run/fastpath/vswitch.ctl (a user
    /// who may not create it runs without a socket, with a warning).
    #[arg(long, value_name = "PATH")]
    pub ctl: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
}

/// `fastpath l2fwd`.
#[derive(Args, Debug)]
pub struct L2fwdArgs {
    /// A port (repeatable; ports pair up 0<->1, 2<->3, ..., a lone last one sends back out of
    /// itself): see the forms below.
    #[arg(long = "port", value_name = "SPEC", required = true)]
    pub ports: Vec<String>,
    /// A pipeline stage, in order (repeatable): see the forms below.
    #[arg(long = "stage", value_name = "SPEC")]
    pub stages: Vec<String>,
    /// CPUs for the lcores, e.g. 0 or 0,1 or 0-1 (default: the first CPU this process may use).
    /// Give busy pollers CPUs of their own: two on one CPU get one scheduler tick each in turn
    /// (fastpath warns when another fastpath busy-polls a CPU given here).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Packets per rx burst (1..=256).
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Stop after this many seconds (default: run until SIGINT or until every rx port ends).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print per-port rates every SECS seconds (0: only at the end).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub stats: f64,
    /// At the end, print one JSON object per line: each port, each lcore, each stage, the pool.
    #[arg(long)]
    pub json: bool,
    /// Mbufs in the pool.
    #[arg(long, default_value_t = 16384)]
    pub mbufs: u32,
    /// Idle behaviour of lcores: busy (poll without pause) or adaptive (back off when idle).
    #[arg(long, value_parser = ["busy", "adaptive"], default_value = "busy")]
    pub idle: String,
}

/// `fastpath bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Pipeline to measure (repeatable; default: all). `--list` shows them.
    #[arg(long = "pipeline", value_name = "NAME")]
    pub pipelines: Vec<String>,
    /// Core counts to run, e.g. 1 or 1,2 or 1-2 (default: 1..=CPUs available).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Seconds measured per core count.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Packets per rx burst (1..=256).
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Print one JSON object per line per (pipeline, core count) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of Mpps against cores to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// List the pipelines and exit.
    #[arg(long)]
    pub list: bool,
}

/// `fastpath pktgen`.
#[derive(Args, Debug)]
pub struct PktgenArgs {
    /// The port to send on (and receive the frames back from): see the forms below.
    #[arg(long, value_name = "SPEC")]
    pub port: String,
    /// Frame size in bytes, without FCS (60..=1664).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Flows: UDP source ports 1024..1024+N, in turn.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Frames per second (k/m suffixes), or max.
    #[arg(long, value_name = "PPS|max", default_value = "max")]
    pub rate: String,
    /// Seconds to send (default: until SIGINT).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Source MAC (default: the port's, else 02:00:00:00:00:01).
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<String>,
    /// Destination MAC.
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:02")]
    pub dst_mac: String,
    /// Source IPv4 address.
    #[arg(long, value_name = "IP", default_value = "198.18.0.1")]
    pub src_ip: String,
    /// Destination IPv4 address.
    #[arg(long, value_name = "IP", default_value = "198.18.0.2")]
    pub dst_ip: String,
    /// Destination UDP port (returning frames are recognised by it and a payload signature).
    #[arg(long, default_value_t = 9)]
    pub dst_port: u16,
    /// CPUs for the lcores; one generator each (default: the first CPU this process may use).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Frames per burst (1..=256).
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Mbufs in the pool.
    #[arg(long, default_value_t = 16384)]
    pub mbufs: u32,
    /// Milliseconds to keep receiving after sending stops (frames in flight).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub drain_ms: u64,
    /// Print the transmit rate every second (to stderr).
    #[arg(long)]
    pub stats: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

pub use fastpath_pmd::spec::parse_list;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0").unwrap(), vec![0]);
        assert_eq!(parse_list("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_list("1-3,5").unwrap(), vec![1, 2, 3, 5]);
        assert!(parse_list("a").is_err());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("1,1").is_err());
        assert!(parse_list("").is_err());
    }
}
