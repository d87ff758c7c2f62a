//! The firewall with a large policy on the lab's bridge: cloudlet's apply (compile, then
//! `Ofctl::sync`'s steps timed one by one: dump, diff, one bundle) for the first apply, a
//! re-apply of the same policy (an empty diff: nothing sent) and a re-apply with one rule changed
//! (only its flows sent), against `ovs-ofctl` given the whole flow set each time:
//! `--bundle replace-flows` (which diffs inside ovs-ofctl), a full reinstall as one bundle
//! (delete every flow of the firewall, add them all: what a tool that keeps no diff sends), and
//! `replace-flows` without a bundle (not atomic: the switch briefly holds a mix of old and new
//! flows).
//!
//! Owns: the policy (N inbound TCP ports, every third from a CIDR of its own, stateful, default
//! deny), the order of the runs and the check that the bridge holds exactly the policy at the
//! end. Must never: touch a bridge other than the lab's, or a flow outside the firewall's scope
//! but the bridge's default `NORMAL` flow, which the peers' flow files carry unchanged.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudlet_netovs::firewall::{
    Action, COOKIE, COOKIE_MASK, Direction, Flow, HostPort, Ipv4Cidr, Policy, PortRange, Protocol,
    Rule, Scope, TableRange, compile, diff,
};
use cloudlet_netovs::ofctl::Ofctl;

use crate::lab::Lab;
use crate::report::{Line, Samples};

/// The first port the policy allows.
const FIRST_PORT: u16 = 10_000;
/// How far the changed rule's port moves.
const CHANGE_BY: u16 = 20_000;
/// How many times the policy is compiled alone.
const COMPILES: usize = 20;

/// What the firewall runs measured.
#[derive(Debug)]
pub struct Firewall {
    /// Rules in the policy.
    pub rules: usize,
    /// Flows it compiles to.
    pub flows: usize,
    /// `compile` alone.
    pub compile: Samples,
    /// Cloudlet's apply with one rule changed, by part: compile, dump, diff, bundle.
    pub parts: [Samples; 4],
    /// The first apply, cloudlet against replace-flows onto a bridge without the firewall.
    pub first: Vec<Line>,
    /// Re-applies: cloudlet with one rule changed (the base), unchanged, and the peers.
    pub again: Vec<Line>,
}

/// The bench's policy: `rules` rules allowing TCP ports 10000 and up in, every third only from
/// a /24 of its own; with `changed`, the middle rule's port is another.
pub fn policy(rules: usize, changed: bool) -> Result<Policy, String> {
    let list = (0..rules)
        .map(|i| {
            let offset = u16::try_from(i).map_err(|_| format!("{rules} rules are too many"))?;
            let mut port = FIRST_PORT
                .checked_add(offset)
                .ok_or_else(|| format!("{rules} rules run out of ports"))?;
            if changed && i == rules / 2 {
                port = port
                    .checked_add(CHANGE_BY)
                    .ok_or_else(|| format!("{rules} rules run out of ports"))?;
            }
            let cidr = match i % 3 {
                0 => {
                    let [hi, lo] = offset.to_be_bytes();
                    Some(
                        Ipv4Cidr::new(Ipv4Addr::new(10, hi, lo, 0), 24)
                            .map_err(|e| e.to_string())?,
                    )
                }
                _ => None,
            };
            Ok(Rule {
                name: format!("port-{i}"),
                direction: Direction::In,
                action: Action::Allow,
                protocol: Protocol::Tcp,
                ports: Some(PortRange::single(port)),
                cidr,
                priority: None,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Policy::new(Action::Deny, list, true).map_err(|e| e.to_string())
}

/// Where the bench's firewall sits: the bridge's LOCAL port with 10.99.0.1, tables 200-209.
fn scope() -> Result<Scope, String> {
    Ok(Scope {
        host_port: HostPort::Local,
        host_addrs: vec![Ipv4Addr::new(10, 99, 0, 1)],
        tables: TableRange::new(200..=209).map_err(|e| e.to_string())?,
        ct_zone: 7,
    })
}

/// The two versions of the policy and the peers' files for each.
struct Version {
    policy: Policy,
    /// For `replace-flows`: the flows and the bridge's default flow.
    replace: String,
    /// For `--bundle add-flows`: delete every flow with the firewall's cookie, add them all.
    reinstall: String,
    /// Its flow mods.
    reinstall_mods: usize,
}

impl Version {
    fn new(lab: &Lab, name: &str, policy: Policy, scope: &Scope) -> Result<Version, String> {
        let flows = compile(&policy, scope);
        let mut replace = String::new();
        let mut reinstall = format!("delete cookie={COOKIE:#x}/{COOKIE_MASK:#x}\n");
        for flow in &flows {
            let _ = writeln!(replace, "{flow}");
            let _ = writeln!(reinstall, "add {flow}");
        }
        replace.push_str("table=0,priority=0,actions=NORMAL\n");
        let write = |suffix: &str, text: &str| {
            let path = lab.path(&format!("{name}.{suffix}"));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok::<_, String>(path.display().to_string())
        };
        Ok(Version {
            policy,
            replace: write("replace", &replace)?,
            reinstall: write("reinstall", &reinstall)?,
            reinstall_mods: flows.len() + 1,
        })
    }
}

/// `ovs-ofctl [--bundle] -O OpenFlow14 <command> <target> <file>`, timed.
fn ofctl_peer(lab: &Lab, bundle: bool, command: &str, file: &str) -> Result<Duration, String> {
    let target = lab.target();
    let mut args = vec!["--timeout=10"];
    if bundle {
        args.push("--bundle");
    }
    args.extend(["-O", "OpenFlow14", command, target.as_str(), file]);
    tokio::task::block_in_place(|| {
        let start = Instant::now();
        let out = Command::new("ovs-ofctl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("`ovs-ofctl`: {e}"))?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "`ovs-ofctl {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(took)
    })
}

/// What one apply of cloudlet's took, in all and by part, and the flow mods it sent.
struct Applied {
    took: Duration,
    sent: usize,
    /// compile, dump (`ovs-ofctl dump-flows` and parsing), diff, bundle (`ovs-ofctl --bundle`).
    parts: [Duration; 4],
}

/// Cloudlet's apply: compile, then `Ofctl::sync`'s own steps one by one (dump, diff, one
/// bundle), each timed.
async fn apply(ofctl: &Ofctl, scope: &Scope, policy: &Policy) -> Result<Applied, String> {
    let start = Instant::now();
    let flows = compile(policy, scope);
    let compiled = Instant::now();
    let installed = ofctl
        .dump_flows(scope)
        .await
        .map_err(|e| format!("dump: {e}"))?;
    let dumped = Instant::now();
    let diff = diff(scope, &installed, &flows).map_err(|e| format!("diff: {e}"))?;
    let diffed = Instant::now();
    ofctl
        .apply(&diff)
        .await
        .map_err(|e| format!("apply: {e}"))?;
    let applied = Instant::now();
    Ok(Applied {
        took: applied - start,
        sent: diff.len(),
        parts: [
            compiled - start,
            dumped - compiled,
            diffed - dumped,
            applied - diffed,
        ],
    })
}

/// Removes the firewall (not timed) and checks that none of its flows is left.
async fn remove(ofctl: &Ofctl, scope: &Scope) -> Result<(), String> {
    ofctl
        .sync(scope, &[])
        .await
        .map_err(|e| format!("removing the firewall: {e}"))?;
    let left = ofctl
        .dump_flows(scope)
        .await
        .map_err(|e| format!("dump: {e}"))?;
    match left.is_empty() {
        true => Ok(()),
        false => Err(format!("{} firewall flows left after removal", left.len())),
    }
}

/// The runs: compile alone, `firsts` first applies each way, then `rounds` rounds of one rule
/// changed (cloudlet), unchanged (cloudlet), one rule changed (replace-flows, a full reinstall,
/// replace-flows without a bundle), each starting from what the one before left.
pub async fn bench(
    lab: &Lab,
    rules: usize,
    firsts: usize,
    rounds: usize,
) -> Result<Firewall, String> {
    let scope = scope()?;
    let ofctl = Ofctl::new(
        lab.target(),
        std::sync::Arc::new(cloudlet_netovs::run::TokioRunner),
    );
    let versions = [
        Version::new(lab, "v1", policy(rules, false)?, &scope)?,
        Version::new(lab, "v2", policy(rules, true)?, &scope)?,
    ];
    let flows = compile(&versions[0].policy, &scope).len();

    let mut compiles = Samples::default();
    for _ in 0..COMPILES {
        let start = Instant::now();
        let compiled = compile(&versions[0].policy, &scope);
        compiles.push(start.elapsed());
        drop(compiled);
    }

    let (mut first, mut first_sent, mut first_peer) =
        (Samples::default(), Vec::new(), Samples::default());
    for _ in 0..firsts {
        remove(&ofctl, &scope).await?;
        let applied = apply(&ofctl, &scope, &versions[0].policy).await?;
        first.push(applied.took);
        first_sent.push(applied.sent);
        remove(&ofctl, &scope).await?;
        first_peer.push(ofctl_peer(
            lab,
            true,
            "replace-flows",
            &versions[0].replace,
        )?);
    }
    // replace-flows installed v1: it must read back as exactly cloudlet's flows.
    let sent = apply(&ofctl, &scope, &versions[0].policy).await?.sent;
    if sent != 0 {
        return Err(format!(
            "after replace-flows, cloudlet's re-apply of the same policy sent {sent} flow mods"
        ));
    }

    let mut now = 0;
    let (mut changed, mut changed_sent) = (Samples::default(), Vec::new());
    let mut parts: [Samples; 4] = Default::default();
    let (mut same, mut same_sent) = (Samples::default(), Vec::new());
    let (mut replaced, mut reinstalled) = (Samples::default(), Samples::default());
    let mut unbundled = Samples::default();
    for _ in 0..rounds {
        now = 1 - now;
        let applied = apply(&ofctl, &scope, &versions[now].policy).await?;
        changed.push(applied.took);
        changed_sent.push(applied.sent);
        for (samples, part) in parts.iter_mut().zip(applied.parts) {
            samples.push(part);
        }

        let applied = apply(&ofctl, &scope, &versions[now].policy).await?;
        same.push(applied.took);
        same_sent.push(applied.sent);

        now = 1 - now;
        replaced.push(ofctl_peer(
            lab,
            true,
            "replace-flows",
            &versions[now].replace,
        )?);

        now = 1 - now;
        reinstalled.push(ofctl_peer(
            lab,
            true,
            "add-flows",
            &versions[now].reinstall,
        )?);

        now = 1 - now;
        unbundled.push(ofctl_peer(
            lab,
            false,
            "replace-flows",
            &versions[now].replace,
        )?);
    }
    // The bridge holds exactly the last version, as cloudlet compiles it.
    let installed = sorted(
        &ofctl
            .dump_flows(&scope)
            .await
            .map_err(|e| format!("dump: {e}"))?,
    );
    if installed != sorted(&compile(&versions[now].policy, &scope)) {
        return Err("the bridge does not hold the policy after the runs".to_owned());
    }
    remove(&ofctl, &scope).await?;

    let reinstall_mods = vec![versions[0].reinstall_mods; reinstalled.len()];
    Ok(Firewall {
        rules,
        flows,
        compile: compiles,
        parts,
        first: vec![
            Line::sent("cloudlet: compile, dump, diff, bundle", first, &first_sent),
            Line::sent(
                "ovs-ofctl --bundle replace-flows (whole set)",
                first_peer,
                &[],
            ),
        ],
        again: vec![
            Line::sent("cloudlet: one rule changed", changed, &changed_sent),
            Line::sent("cloudlet: unchanged", same, &same_sent),
            Line::sent(
                "ovs-ofctl --bundle replace-flows (whole set)",
                replaced,
                &[],
            ),
            Line::sent(
                "ovs-ofctl --bundle add-flows (delete all, add all)",
                reinstalled,
                &reinstall_mods,
            ),
            Line::sent(
                "ovs-ofctl replace-flows, no bundle (not atomic)",
                unbundled,
                &[],
            ),
        ],
    })
}

fn sorted(flows: &[Flow]) -> Vec<String> {
    let mut v: Vec<String> = flows.iter().map(Flow::to_string).collect();
    v.sort();
    v
}
