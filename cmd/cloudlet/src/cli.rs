//! The command line: every verb, flag and `--help` text of the `cloudlet` binary. Parsing only; the
//! verbs run in `server.rs`, `ctl.rs` and `main.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where a node keeps its store, sockets, shims and logs unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cloudlet";

/// cloudlet: one binary that runs a node's services — in order, restarted when they crash, never
/// evicted, outliving cloudlet itself.
#[derive(Debug, Parser)]
#[command(
    name = "cloudlet",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the cluster's server: the store, placement, the API on DIR/cloudlet.sock and on
    /// --listen (mutual TLS), and — unless --disable-agent — this host as a node.
    #[command(
        after_help = "Example:\n  cloudlet server --data-dir /var/lib/cloudlet\n\n\
        It writes DIR/admin.conf (0600): copy it to run `cloudlet ctl --config admin.conf` from\n\
        another machine. Nodes join with `cloudlet ctl token create` and `cloudlet agent`.\n\n\
        SIGTERM or Ctrl-C stops cloudlet, never the services: each runs under its own shim and is\n\
        adopted again by the next `cloudlet server` on the same data dir."
    )]
    Server(ServerArgs),
    /// Operate a running server: apply manifests, list, inspect, stop, start, read logs.
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Ctl(CtlArgs),
    /// Is this host fit to run cloudlet: kernel, cgroup v2 and its controllers and delegation,
    /// cgroup.kill, the child subreaper, the data dir's free space, the clock, Open vSwitch.
    #[command(
        after_help = "Example:\n  cloudlet check-config --data-dir /var/lib/cloudlet\n\n\
        Each line is OK, WARN or FAIL, with the fix for anything not OK. The exit code is 1 when\n\
        any check FAILs (WARN alone exits 0: cloudlet runs, and says what it cannot do)."
    )]
    CheckConfig(CheckConfigArgs),
    /// Join a cluster and run this node's share of it.
    #[command(
        after_help = "Example:\n  cloudlet agent --server https://10.0.0.1:6443 --token K10…::abc123.… \\\n            --data-dir /var/lib/cloudlet --labels rack=r1\n\n        The token (from `cloudlet ctl token create` on the server) is checked against the server's\n        CA before its secret is sent; the node's key never leaves this host. Once joined, the\n        agent restarts without a token. Stopping the agent, or losing the server, never stops a\n        service."
    )]
    Agent(AgentArgs),
    /// What the Cloudpods bootstrap runs on a node: its steps and its MariaDB (the services a
    /// cluster YAML renders run these; an operator runs them only to debug a step).
    #[command(subcommand, subcommand_required = true, arg_required_else_help = true)]
    Cloudpods(CloudpodsCommand),
}

/// `cloudlet cloudpods`.
#[derive(Debug, Subcommand)]
pub enum CloudpodsCommand {
    /// Carry out one bootstrap step's plan (a `type: oneshot` service runs this): databases
    /// and users, keystone's policies, regions, services, endpoints and accounts, region's
    /// zones. Every action is idempotent: a step that died halfway is finished by running it
    /// again.
    #[command(after_help = "Example:
  cloudlet cloudpods step --plan /etc/yunion/cloudlet/region-init.json

        The plan (JSON, 0600: it holds passwords) is written by the node from the cluster YAML's
        rendering; `cloudlet ctl describe service region-init` shows the step's state, and its
        logs show one line per thing it made sure of.")]
    Step {
        /// The step's plan file.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
    /// Make MariaDB's directories ready, then become mariadbd (the `mysql` service runs this):
    /// the system tables installed the first time, the data and runtime directories owned by
    /// the server's user.
    #[command(after_help = "Example:
  cloudlet cloudpods mariadbd --defaults-file /etc/yunion/mysql/my.cnf \
              --data-dir /var/lib/cloudpods/mysql --run-dir /var/lib/cloudpods/mysql-run --user mysql")]
    Mariadbd {
        /// The server's option file (passed to mariadbd first).
        #[arg(long, value_name = "FILE")]
        defaults_file: PathBuf,
        /// Its data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Its runtime directory (socket, pid file).
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
        /// The system user it runs as.
        #[arg(long, default_value = "mysql")]
        user: String,
        /// The server program.
        #[arg(long, default_value = "mariadbd", value_name = "PROGRAM")]
        mariadbd: PathBuf,
        /// The program that installs the system tables.
        #[arg(long, default_value = "mariadb-install-db", value_name = "PROGRAM")]
        install_db: PathBuf,
    },
}

/// `cloudlet server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The node this process runs (unless --disable-agent).
    #[command(flatten)]
    pub node: NodeArgs,
    /// Where the mutual-TLS API listens (agents, and `ctl --config`).
    #[arg(long, default_value = "0.0.0.0:6443", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// The address agents and admin.conf use to reach this server (default: the --listen
    /// address, or this host's first non-loopback IPv4 address when that is 0.0.0.0).
    #[arg(long, value_name = "IP|NAME")]
    pub advertise_address: Option<String>,
    /// Another name or IP for the server's certificate (repeatable).
    #[arg(long = "tls-san", value_name = "IP|NAME")]
    pub tls_sans: Vec<String>,
    /// Run only the control plane: no services on this host.
    #[arg(long)]
    pub disable_agent: bool,
    /// How long node, server and admin certificates live; each renews itself at two thirds.
    #[arg(long, default_value = "90d", value_parser = parse_lifetime)]
    pub cert_lifetime: std::time::Duration,
    /// How long the Cloudpods services' certificate (`<configDir>/pki/service.crt`, from a
    /// services CA of the cluster's own) lives; renewed at two thirds, rolled out node by node.
    #[arg(long, default_value = "365d", value_parser = parse_lifetime)]
    pub service_cert_lifetime: std::time::Duration,
    /// A node whose heartbeats stop this long is lost: its relocatable services move.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_lost_after: std::time::Duration,
}

/// `cloudlet agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent runs.
    #[command(flatten)]
    pub node: NodeArgs,
    /// The server's API (e.g. https://10.0.0.1:6443).
    #[arg(long, env = "CLOUDLET_SERVER")]
    pub server: String,
    /// The join token from `cloudlet ctl token create` (needed until the node has joined).
    #[arg(long, env = "CLOUDLET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Labels to join with: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels, default_value = "")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where this agent's API listens (the server fetches logs and runs exec through it).
    #[arg(long, default_value = "0.0.0.0:10250", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// The address the server reaches this agent at (default: as for the server).
    #[arg(long, value_name = "IP|NAME")]
    pub advertise_address: Option<String>,
    /// How often the agent reports to the server.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub heartbeat: std::time::Duration,
}

/// What every node has: its data dir, name, reserve, monitor and cgroup settings.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory of the store, the API socket, shims and logs.
    #[arg(long, env = "CLOUDLET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Name of this node, shown in status (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Keep the logs of deleted services this long (e.g. 168h).
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub log_retention: std::time::Duration,
    /// Keep at most this many events.
    #[arg(long, default_value_t = 10_000)]
    pub max_events: usize,
    /// What the node keeps for the system, never given to services: cpu=M,memory=Q,pids=N
    /// (e.g. cpu=500m,memory=1Gi,pids=1000).
    #[arg(long, value_name = "RESOURCES", default_value = "cpu=0,memory=0,pids=0", value_parser = parse_reserve)]
    pub reserve: cloudlet_host::Resources,
    /// Another path whose filesystem the node watches for DiskPressure (repeatable; the data
    /// dir is always watched).
    #[arg(long = "disk-path", value_name = "PATH")]
    pub disk_paths: Vec<PathBuf>,
    /// DiskPressure warning below this much free space, in percent.
    #[arg(long, default_value_t = 15.0)]
    pub disk_warn_pct: f64,
    /// DiskPressure critical below this much free space, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub disk_critical_pct: f64,
    /// How often the node reads its usage and pressure.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub monitor_interval: std::time::Duration,
    /// cloudlet's cgroup, relative to the cgroup v2 mount (default: the cgroup it was started
    /// in, as systemd delegates it with Delegate=yes; `/cloudlet` when started at the root).
    #[arg(long, value_name = "CGROUP")]
    pub cgroup_root: Option<PathBuf>,
    /// Log filter for cloudlet's own messages (e.g. info, debug, cloudlet_supervisor=debug).
    #[arg(long, env = "CLOUDLET_LOG", default_value = "info")]
    pub log: String,
    /// This node's network (kind: NodeNetwork): Open vSwitch bridges, the uplink NIC whose
    /// addresses move to its bridge, ports, and the node firewall as OpenFlow rules — kept true
    /// continuously; never iptables.
    #[arg(long, value_name = "FILE")]
    pub network: Option<PathBuf>,
    /// Run from the installed binary instead of a private copy of it in DATA_DIR/bin. The copy
    /// (one per version, kept while it runs) means `ctl` runs from the installed file never add
    /// their code to the server's memory, and the installed binary can be replaced under a
    /// running server; it costs the binary's size on disk.
    #[arg(long, env = "CLOUDLET_NO_PRIVATE_EXE", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_private_exe: bool,
}

/// `cloudlet check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The data dir to check (free space, writable).
    #[arg(long, env = "CLOUDLET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Output format (yaml prints JSON too).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cloudlet ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Data directory of the server to talk to (its socket is DIR/cloudlet.sock).
    #[arg(long, global = true, env = "CLOUDLET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Talk to this socket instead of DIR/cloudlet.sock — e.g. the executor socket a service
    /// finds in $CLOUDLET_EXECUTOR.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Reach a server over mutual TLS with this admin config (the server writes one to
    /// DIR/admin.conf) instead of the local socket: from any machine.
    #[arg(long, global = true, env = "CLOUDLET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The verb.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Output formats of listing verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// More columns: addresses, roles, labels, certificate expiry.
    Wide,
    /// JSON for programs.
    Json,
    /// YAML for programs and people.
    Yaml,
}

/// Kinds of objects `get`, `describe` and `delete` work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Services (also: service, svc).
    #[value(alias = "service", alias = "svc")]
    Services,
    /// Nodes: capacity, allocatable, pressure conditions (also: node).
    #[value(alias = "node")]
    Nodes,
    /// Node networks: OVS bridges, ports, firewall, drift repairs (also: net).
    #[value(alias = "net")]
    Network,
}

/// `cloudlet ctl` verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Validate manifests and store them; the server starts what they describe.
    #[command(
        after_help = "Examples:\n  cloudlet ctl apply -f examples/stack.yaml\n  \
        cloudlet ctl apply -f ./manifests/        # every *.yaml and *.yml in the directory\n  \
        cloudlet ctl manifests show openvswitch | cloudlet ctl apply -f -   # - is stdin\n\n\
        All files are validated first; if any document is invalid nothing is applied.\n\
        A service whose rollout of this very manifest rolled back is held (it keeps the manifest \
        it was rolled back to): change the manifest, or pass --retry."
    )]
    Apply {
        /// A manifest file or a directory of them (repeatable).
        #[arg(
            short = 'f',
            long = "filename",
            required = true,
            value_name = "FILE|DIR"
        )]
        files: Vec<PathBuf>,
        /// Roll out again a manifest that a rollout rolled back from. Without it such a service
        /// is held: it keeps the manifest it was rolled back to, and the output says so.
        #[arg(long)]
        retry: bool,
    },
    /// List services (of every node) or nodes.
    #[command(after_help = "Examples:\n  cloudlet ctl get services\n  \
        cloudlet ctl get services --node n2\n  \
        cloudlet ctl get nodes -o wide\n  \
        cloudlet ctl get network --node n2\n  \
        cloudlet ctl get services -o json | jq '.[] | select(.state != \"running\")'")]
    Get {
        /// What to list.
        kind: Kind,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Only this node's services.
        #[arg(long)]
        node: Option<String>,
        /// Every node's services (the default; for kubectl hands).
        #[arg(short = 'A', long)]
        all_nodes: bool,
    },
    /// Show one service: status, limits, manifest and recent events.
    #[command(after_help = "Example:\n  cloudlet ctl describe service web")]
    Describe {
        /// What kind of object.
        kind: Kind,
        /// Its name.
        name: String,
        /// Output format (table means the human view).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The node whose copy to show (a service on several nodes).
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop and remove a service (its logs stay until retention removes them), or forget a node.
    #[command(
        after_help = "Examples:\n  cloudlet ctl delete service web\n  cloudlet ctl delete node n3"
    )]
    Delete {
        /// What kind of object.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// Stop a service's run and start a new one now (not counted as a restart).
    #[command(
        after_help = "Examples:\n  cloudlet ctl restart web            # on every node that runs it\n  \
        cloudlet ctl restart web --node n2"
    )]
    Restart {
        /// Service name.
        name: String,
        /// Only its copy on this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop a service and keep it stopped (also across server restarts) until `start`.
    #[command(after_help = "Example:\n  cloudlet ctl stop web")]
    Stop {
        /// Service name.
        name: String,
    },
    /// Start a stopped or failed service now.
    #[command(after_help = "Example:\n  cloudlet ctl start web")]
    Start {
        /// Service name.
        name: String,
    },
    /// Print a service's logs, across rotations.
    #[command(after_help = "Examples:\n  cloudlet ctl logs web --tail 50\n  \
        cloudlet ctl logs web -f --since 10m\n  \
        cloudlet ctl logs web --previous          # the run before the last restart")]
    Logs {
        /// Service name.
        name: String,
        /// Keep printing new lines as they are written.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Only lines newer than this (e.g. 30s, 10m, 2h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// The run before the last restart.
        #[arg(short, long)]
        previous: bool,
        /// Print each line's stream and run too.
        #[arg(long)]
        details: bool,
        /// The node whose copy to read (a service on several nodes).
        #[arg(long)]
        node: Option<String>,
    },
    /// Start a transient service: a daemon in its own cgroup, with its own shim and logs, that
    /// outlives the service that asked for it and is stopped only explicitly.
    #[command(after_help = "Examples:\n  \
        cloudlet ctl run --name vm-1 --group vms --memory 2Gi --cpu 2 --restart never -- qemu-system-x86_64 ...\n  \
        cloudlet ctl --socket \"$CLOUDLET_EXECUTOR\" run --name helper -- /usr/sbin/dnsmasq -k\n\n\
        Listed by `get services` with its owner; stop it with `ctl stop NAME`, remove it with\n\
        `ctl delete service NAME`.")]
    Run {
        /// Name of the transient service.
        #[arg(long)]
        name: String,
        /// Its group (cgroup groups/GROUP/NAME).
        #[arg(long)]
        group: Option<String>,
        /// Memory limit (e.g. 2Gi).
        #[arg(long)]
        memory: Option<String>,
        /// CPU limit in cores or millicores (e.g. 2, 500m).
        #[arg(long)]
        cpu: Option<String>,
        /// Process limit.
        #[arg(long)]
        pids: Option<u64>,
        /// Restart policy: always, on-failure or never.
        #[arg(long, default_value = "never")]
        restart: String,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        env: Vec<(String, String)>,
        /// Working directory.
        #[arg(long)]
        workdir: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a command on the host to completion; its output streams back and its exit code
    /// becomes ctl's.
    #[command(
        after_help = "Examples:\n  cloudlet ctl exec -- modprobe openvswitch\n  \
        cloudlet ctl exec --timeout 30s -- ovs-vsctl show\n  \
        cloudlet ctl exec --node n2 -- uptime"
    )]
    Exec {
        /// The node to run it on (default: the server's own).
        #[arg(long)]
        node: Option<String>,
        /// Kill the command after this long (default 10m).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        env: Vec<(String, String)>,
        /// Working directory.
        #[arg(long)]
        workdir: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print events: starts, exits, restarts, readiness changes.
    #[command(
        after_help = "Examples:\n  cloudlet ctl events\n  cloudlet ctl events -f --service web"
    )]
    Events {
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Only this service's events.
        #[arg(long)]
        service: Option<String>,
        /// Output format: a table, or one JSON object per line (json and yaml alike, so that
        /// `-f` output can be read line by line).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The cluster YAML (kind: Cluster): apply it, see its revisions, diff, roll back, export.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloudlet ctl cluster apply -f cluster.yaml\n  \
        cloudlet ctl cluster diff -f cluster.yaml      # per node: services added, removed, changed fields\n  \
        cloudlet ctl cluster history\n  cloudlet ctl cluster rollback --to 3\n  \
        cloudlet ctl cluster export > cluster.yaml     # stable: export, apply, export is identical"
    )]
    Cluster(ClusterVerb),
    /// Rollouts: a changed service moves node by node (maxUnavailable at a time, each ready
    /// within progressDeadline, else it rolls back by itself). See, undo, pause, resume them.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloudlet ctl rollout status region          # node by node\n  \
        cloudlet ctl rollout status region --watch  # until it ends; exit 1 if it rolled back\n  \
        cloudlet ctl rollout history region\n  cloudlet ctl rollout pause host\n  \
        cloudlet ctl rollout resume host\n  \
        cloudlet ctl rollout undo host               # abort, or go back to the previous manifest\n  \
        cloudlet ctl rollout undo host --to 3        # the manifest rollout 3 moved to"
    )]
    Rollout(RolloutVerb),
    /// The Cloudpods cluster's administrator: what `climc` (or curl) logs in with.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloudlet ctl cloudpods credentials            # export lines, for `. <(...)`\n  \
        cloudlet ctl cloudpods credentials -o json\n\n\
        The server also writes them to DIR/cloudpods-admin.rc (0600) when it applies a cluster YAML."
    )]
    Cloudpods(CloudpodsVerb),
    /// The manifests compiled into cloudlet: list them, print one.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloudlet ctl manifests list\n  \
        cloudlet ctl manifests show openvswitch | cloudlet ctl apply -f -"
    )]
    Manifests(ManifestsVerb),
    /// Join tokens: create (printed once), list, revoke.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloudlet ctl token create --ttl 2h --role compute\n  \
        cloudlet ctl token list\n  cloudlet ctl token revoke abc123"
    )]
    Token(TokenVerb),
    /// Rotate the cluster's CA: a new CA signs, both are trusted until --finish.
    #[command(
        subcommand,
        after_help = "Examples:\n  cloudlet ctl ca rotate\n  \
        cloudlet ctl get nodes -o wide          # every node renewed: CERT EXPIRES moved\n  \
        cloudlet ctl ca rotate --finish"
    )]
    Ca(CaVerb),
    /// Set or remove node labels: k=v sets, k- removes.
    #[command(after_help = "Example:\n  cloudlet ctl label node n2 rack=r1 disk=ssd old-")]
    Label {
        /// `node`.
        kind: Kind,
        /// The node.
        name: String,
        /// k=v to set, k- to remove.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Place nothing new on a node (what runs there stays).
    #[command(after_help = "Example:\n  cloudlet ctl cordon n2")]
    Cordon {
        /// The node.
        name: String,
    },
    /// Let placement use a node again (also ends a drain).
    #[command(after_help = "Example:\n  cloudlet ctl uncordon n2")]
    Uncordon {
        /// The node.
        name: String,
    },
    /// Cordon a node and move its relocatable services elsewhere; the others stay unless
    /// --force (a VM host's services must never run twice).
    #[command(after_help = "Examples:\n  cloudlet ctl drain n2\n  cloudlet ctl drain n2 --force")]
    Drain {
        /// The node.
        name: String,
        /// Move every replicated service, relocatable or not.
        #[arg(long)]
        force: bool,
    },
}

/// `cloudlet ctl cluster` verbs.
#[derive(Debug, Subcommand)]
pub enum ClusterVerb {
    /// Apply a cluster YAML: a new numbered revision; its services are rendered from the
    /// embedded templates and applied, the ones it no longer has are deleted.
    #[command(
        after_help = "Examples:\n  cloudlet ctl cluster apply -f cluster.yaml\n  \
        cloudlet ctl cluster apply -f cluster.yaml --retry   # roll out again what rolled back\n\n\
        A service whose rollout of the manifest this YAML renders rolled back is held (CHANGE \
        held): it keeps the manifest it was rolled back to until the YAML changes it or --retry."
    )]
    Apply {
        /// The cluster YAML (- for stdin).
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Roll out again a manifest that a rollout rolled back from. Without it such a service
        /// is held: it keeps the manifest it was rolled back to, and the output says so.
        #[arg(long)]
        retry: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What a cluster YAML would change against the current revision.
    #[command(after_help = "Example:\n  cloudlet ctl cluster diff -f cluster.yaml")]
    Diff {
        /// The cluster YAML (- for stdin).
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Every applied revision: when, by whom, what it changed.
    #[command(after_help = "Example:\n  cloudlet ctl cluster history")]
    History {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Apply an earlier revision again (as a new revision).
    #[command(after_help = "Example:\n  cloudlet ctl cluster rollback --to 3")]
    Rollback {
        /// The revision to go back to.
        #[arg(long)]
        to: u64,
    },
    /// Print the current cluster YAML in canonical form.
    #[command(after_help = "Example:\n  cloudlet ctl cluster export > cluster.yaml")]
    Export,
}

/// `cloudlet ctl cloudpods` verbs.
#[derive(Debug, Subcommand)]
pub enum CloudpodsVerb {
    /// Print keystone's administrator (sysadmin): auth URL, password, project, region.
    #[command(
        after_help = "Examples:\n  . <(cloudlet ctl cloudpods credentials)   # then: climc region-list\n  \
        cloudlet ctl cloudpods credentials -o json | jq -r .password"
    )]
    Credentials {
        /// Output format: table prints `export OS_...=` lines.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// `cloudlet ctl rollout` verbs.
#[derive(Debug, Subcommand)]
pub enum RolloutVerb {
    /// Where the current rollout of a service is: its state and every node's step.
    #[command(after_help = "Examples:\n  cloudlet ctl rollout status region\n  \
        cloudlet ctl rollout status region --watch -o json")]
    Status {
        /// The service.
        name: String,
        /// Follow it until it completes or rolls back (exit 1 when it rolled back).
        #[arg(short, long)]
        watch: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The service's kept rollouts (the last 10), oldest first.
    #[command(after_help = "Example:\n  cloudlet ctl rollout history region")]
    History {
        /// The service.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Go back: a rollout under way is aborted (every node returns to the old manifest at
    /// once); a finished one is followed by a new rollout to the manifest it replaced.
    #[command(after_help = "Examples:\n  cloudlet ctl rollout undo region\n  \
        cloudlet ctl rollout undo region --to 2")]
    Undo {
        /// The service.
        name: String,
        /// Roll out the manifest that rollout N moved to instead.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
    },
    /// Admit no more nodes; steps under way finish (and do not run out of time while paused).
    #[command(after_help = "Example:\n  cloudlet ctl rollout pause host")]
    Pause {
        /// The service.
        name: String,
    },
    /// Admit nodes again; steps under way get their whole deadline again.
    #[command(after_help = "Example:\n  cloudlet ctl rollout resume host")]
    Resume {
        /// The service.
        name: String,
    },
}

/// `cloudlet ctl manifests` verbs.
#[derive(Debug, Subcommand)]
pub enum ManifestsVerb {
    /// The embedded manifest files and what they run.
    #[command(after_help = "Example:\n  cloudlet ctl manifests list")]
    List,
    /// Print one embedded manifest file, ready to edit or apply.
    #[command(after_help = "Example:\n  cloudlet ctl manifests show openvswitch > ovs.yaml")]
    Show {
        /// Its name (from `list`).
        name: String,
    },
}

/// `cloudlet ctl ca` verbs.
#[derive(Debug, Subcommand)]
pub enum CaVerb {
    /// Start a rotation (a new CA signs every new certificate; the old one stays trusted), or
    /// end it with --finish (the old CA is trusted no more).
    #[command(
        after_help = "Examples:\n  cloudlet ctl ca rotate\n  cloudlet ctl ca rotate --finish"
    )]
    Rotate {
        /// End the rotation under way.
        #[arg(long)]
        finish: bool,
    },
}

/// `cloudlet ctl token` verbs.
#[derive(Debug, Subcommand)]
pub enum TokenVerb {
    /// Make a join token; it is printed once and stored only as a hash.
    #[command(after_help = "Example:\n  cloudlet ctl token create --ttl 24h --role compute")]
    Create {
        /// How long it works.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// The role of nodes that join with it: compute or control.
        #[arg(long, default_value = "compute")]
        role: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List the tokens (never their secrets).
    #[command(after_help = "Example:\n  cloudlet ctl token list -o json")]
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Revoke a token: nodes can no longer join with it (joined nodes stay).
    #[command(after_help = "Example:\n  cloudlet ctl token revoke abc123")]
    Revoke {
        /// The token's id (the part between `::` and `.`).
        id: String,
    },
}

/// Parses `cpu=500m,memory=1Gi,pids=1000` (any subset) with the manifest's quantity rules.
pub fn parse_reserve(s: &str) -> Result<cloudlet_host::Resources, String> {
    let mut r = cloudlet_host::Resources::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        match key {
            "cpu" => {
                r.cpu_millis = cloudlet_spec::CpuQuantity::parse(value)
                    .map(|q| q.millicores())
                    .or_else(|e| {
                        if value == "0" {
                            Ok(0)
                        } else {
                            Err(e.to_string())
                        }
                    })?;
            }
            "memory" => {
                r.memory_bytes = cloudlet_spec::Quantity::parse(value)
                    .map(|q| q.bytes())
                    .map_err(|e| e.to_string())?;
            }
            "pids" => {
                r.pids = value
                    .parse()
                    .map_err(|_| format!("pids={value}: not a number"))?
            }
            other => {
                return Err(format!(
                    "unknown resource {other:?}: expected cpu, memory or pids"
                ));
            }
        }
    }
    Ok(r)
}

/// Parses `k=v,k2=v2` (empty: none).
pub fn parse_labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(parse_key_value)
        .collect()
}

/// Parses a certificate lifetime: a duration, or whole days as `90d`.
pub fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    if let Some(days) = s.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .map_err(|_| format!("{s:?}: expected e.g. 90d, 720h or 60s"))?;
        return Ok(std::time::Duration::from_secs(days.saturating_mul(86_400)));
    }
    parse_duration(s)
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Parses `30s`, `10m`, `1h30m` with the manifest's duration rules.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    cloudlet_spec::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_every_verb_has_an_example() {
        Cli::command().debug_assert();
        let mut cmd = Cli::command();
        let ctl = cmd.find_subcommand_mut("ctl").unwrap();
        for verb in ctl.get_subcommands() {
            let help = verb
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("cloudlet ctl"),
                "`ctl {}` has no example",
                verb.get_name()
            );
        }
    }
}
