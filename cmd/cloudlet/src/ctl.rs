//! `cloudlet ctl`: the operator's client. Reads files, calls the API through `cloudlet_api::Client`
//! and prints tables, JSON or YAML. No logic beyond presentation lives here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cloudlet_api::dto::{
    Action, ApplyFile, ApplyRequest, CaRotateRequest, ClusterRequest, Event, EventsQuery,
    ExecRequest, LogsQuery, NodeAction, RollbackRequest, RolloutAction, RolloutRequest,
    RolloutState, RunRequest, ServiceDetail, ServiceStatus, ServicesQuery, TokenRequest,
};
use cloudlet_api::{AdminConfig, Client};
use futures_util::StreamExt;
use jiff::Timestamp;

use crate::cli::{
    CaVerb, CloudpodsVerb, ClusterVerb, CtlArgs, Kind, ManifestsVerb, Output, RolloutVerb,
    TokenVerb, Verb,
};

/// Runs one verb.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    // Like every Unix filter: `ctl ... | head` ends quietly when the reader goes away.
    // SAFETY: restoring the default disposition installs no handler code; no other thread runs yet.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .context("reset SIGPIPE")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let client = match (&args.config, args.socket) {
        (Some(config), _) => AdminConfig::load(config)
            .and_then(|c| c.client())
            .map_err(api)?,
        (None, Some(socket)) => Client::unix(socket),
        (None, None) => Client::unix(args.data_dir.join("cloudlet.sock")),
    };
    runtime.block_on(verb(&client, args.verb))
}

async fn verb(client: &Client, verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Apply { files, retry } => apply(client, &files, retry).await,
        Verb::Get {
            kind: Kind::Nodes,
            output,
            ..
        } => {
            let nodes = client.nodes().await.map_err(api)?;
            print_nodes(&nodes, output)
        }
        Verb::Describe {
            kind: Kind::Nodes,
            name,
            output,
            ..
        } => {
            let nodes = client.nodes().await.map_err(api)?;
            let Some(node) = nodes.into_iter().find(|n| n.name == name) else {
                bail!("node {name:?} not found (`cloudlet ctl get nodes` lists them)");
            };
            match output {
                Output::Table | Output::Wide => print_node(&node),
                other => print_value(&node, other),
            }
        }
        Verb::Get {
            kind: Kind::Network,
            output,
            node,
            ..
        } => {
            let nets = client.network(node.as_deref()).await.map_err(api)?;
            print_network(&nets, output)
        }
        Verb::Describe {
            kind: Kind::Network,
            ..
        }
        | Verb::Delete {
            kind: Kind::Network,
            ..
        } => bail!("networks are listed with `cloudlet ctl get network [--node N]`"),
        Verb::Get {
            kind: _,
            output,
            node,
            all_nodes: _,
        } => {
            let services = client
                .list_services(&ServicesQuery { node })
                .await
                .map_err(api)?;
            print_services(&services, output)
        }
        Verb::Describe {
            kind: _,
            name,
            output,
            node,
        } => {
            let detail = client
                .describe_service(&name, node.as_deref())
                .await
                .map_err(api)?;
            match output {
                Output::Table | Output::Wide => print_detail(&detail),
                other => print_value(&detail, other),
            }
        }
        Verb::Delete {
            kind: Kind::Nodes,
            name,
        } => {
            let r = client.delete_node(&name).await.map_err(api)?;
            println!("{}", r.message);
            Ok(())
        }
        Verb::Delete { kind: _, name } => {
            let r = client.delete_service(&name).await.map_err(api)?;
            println!("{}", r.message);
            Ok(())
        }
        Verb::Restart { name, node } => action(client, &name, Action::Restart, node).await,
        Verb::Stop { name } => action(client, &name, Action::Stop, None).await,
        Verb::Start { name } => action(client, &name, Action::Start, None).await,
        Verb::Token(t) => token(client, t).await,
        Verb::Cluster(c) => cluster(client, c).await,
        Verb::Rollout(r) => rollout(client, r).await,
        Verb::Cloudpods(CloudpodsVerb::Credentials { output }) => {
            let admin = client.cloudpods_credentials().await.map_err(api)?;
            match output {
                Output::Table | Output::Wide => {
                    print!("{}", cloudlet_cluster::cloudpods::rc_text(&admin));
                }
                _ => print_value(&admin, output)?,
            }
            Ok(())
        }
        Verb::Manifests(ManifestsVerb::List) => {
            let mut rows = vec![vec!["NAME".to_owned(), "RUNS".to_owned()]];
            for m in crate::embedded::MANIFESTS {
                rows.push(vec![m.name.to_owned(), m.about.to_owned()]);
            }
            print_table(&rows);
            Ok(())
        }
        Verb::Manifests(ManifestsVerb::Show { name }) => {
            let Some(m) = crate::embedded::find(&name) else {
                bail!("no embedded manifest {name:?} (`cloudlet ctl manifests list` names them)");
            };
            print!("{}", m.text);
            Ok(())
        }
        Verb::Ca(CaVerb::Rotate { finish }) => {
            let r = client
                .rotate_ca(&CaRotateRequest { finish })
                .await
                .map_err(api)?;
            println!("{}", r.message);
            Ok(())
        }
        Verb::Label { kind, name, labels } => {
            if kind != Kind::Nodes {
                bail!("only nodes have labels to set: `cloudlet ctl label node NAME k=v`");
            }
            let mut set = std::collections::BTreeMap::new();
            let mut remove = Vec::new();
            for l in labels {
                if let Some((k, v)) = l.split_once('=') {
                    set.insert(k.to_owned(), v.to_owned());
                } else if let Some(k) = l.strip_suffix('-') {
                    remove.push(k.to_owned());
                } else {
                    bail!("{l:?}: expected k=v to set a label or k- to remove one");
                }
            }
            node_action(client, &name, NodeAction::Label { set, remove }).await
        }
        Verb::Cordon { name } => node_action(client, &name, NodeAction::Cordon).await,
        Verb::Uncordon { name } => node_action(client, &name, NodeAction::Uncordon).await,
        Verb::Drain { name, force } => {
            node_action(client, &name, NodeAction::Drain { force }).await
        }
        Verb::Logs {
            name,
            follow,
            tail,
            since,
            previous,
            details,
            node,
        } => {
            let since = match since {
                Some(d) => Some(ago(d)?),
                None => None,
            };
            let query = LogsQuery {
                follow,
                tail,
                since,
                previous,
                node,
            };
            let mut stream = client.logs(&name, &query).await.map_err(api)?;
            let mut out = std::io::stdout().lock();
            while let Some(line) = stream.next().await {
                let line = line.map_err(api)?;
                if details {
                    write!(out, "{} {} {} ", line.ts, line.stream, line.run)?;
                }
                out.write_all(line.text.as_bytes())?;
                if !line.partial {
                    out.write_all(b"\n")?;
                }
                if follow {
                    out.flush()?;
                }
            }
            Ok(())
        }
        Verb::Run {
            name,
            group,
            memory,
            cpu,
            pids,
            restart,
            env,
            workdir,
            command,
        } => {
            let request = RunRequest {
                name,
                group,
                command,
                env: env.into_iter().collect(),
                working_dir: workdir,
                memory,
                cpu,
                pids,
                restart: Some(restart),
            };
            let r = client.run(&request).await.map_err(api)?;
            println!("{}", r.message);
            Ok(())
        }
        Verb::Exec {
            node,
            timeout,
            env,
            workdir,
            command,
        } => {
            let request = ExecRequest {
                command,
                env: env.into_iter().collect(),
                working_dir: workdir,
                timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                node,
            };
            let mut stream = client.exec(&request).await.map_err(api)?;
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            while let Some(item) = stream.next().await {
                let item = item.map_err(api)?;
                match (item.stream.as_deref(), item.data) {
                    (Some("stderr"), Some(data)) => {
                        err.write_all(data.as_bytes())?;
                        err.flush()?;
                    }
                    (Some(_), Some(data)) => {
                        out.write_all(data.as_bytes())?;
                        out.flush()?;
                    }
                    _ => {
                        if item.timed_out == Some(true) {
                            bail!("the command did not finish within its timeout and was killed");
                        }
                        if let Some(signal) = item.signal {
                            bail!("the command was killed by {signal}");
                        }
                        let code = item.exit_code.unwrap_or(1);
                        if code != 0 {
                            return Err(ExitCode(code).into());
                        }
                        return Ok(());
                    }
                }
            }
            bail!("the server ended the exec without the command's exit")
        }
        Verb::Events {
            follow,
            service,
            output,
        } => {
            let query = EventsQuery {
                follow,
                service,
                since_revision: None,
                limit: None,
            };
            let mut stream = client.events(&query).await.map_err(api)?;
            let mut out = std::io::stdout().lock();
            if matches!(output, Output::Table | Output::Wide) {
                writeln!(
                    out,
                    "{:<24} {:<16} {:<16} {:<16} MESSAGE",
                    "TIME", "NODE", "SERVICE", "REASON"
                )?;
            }
            while let Some(ev) = stream.next().await {
                let ev = ev.map_err(api)?;
                print_event(&mut out, &ev, output)?;
                if follow {
                    out.flush()?;
                }
            }
            Ok(())
        }
    }
}

/// API errors carry their whole story in their message; keep it one line, without the cause
/// chain repeated.
fn api(e: cloudlet_api::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn ago(d: std::time::Duration) -> anyhow::Result<Timestamp> {
    let span = jiff::SignedDuration::try_from(d).context("--since is too large")?;
    Timestamp::now()
        .checked_sub(span)
        .context("--since is too large")
}

async fn action(
    client: &Client,
    name: &str,
    action: Action,
    node: Option<String>,
) -> anyhow::Result<()> {
    let r = client
        .service_action(name, action, node.as_deref())
        .await
        .map_err(api)?;
    println!("{}", r.message);
    Ok(())
}

async fn node_action(client: &Client, node: &str, action: NodeAction) -> anyhow::Result<()> {
    let r = client.node_action(node, &action).await.map_err(api)?;
    println!("{}", r.message);
    Ok(())
}

async fn token(client: &Client, verb: TokenVerb) -> anyhow::Result<()> {
    match verb {
        TokenVerb::Create {
            ttl,
            role,
            description,
            output,
        } => {
            let request = TokenRequest {
                ttl_seconds: Some(ttl.as_secs()),
                role: Some(role),
                description,
            };
            let created = client.create_token(&request).await.map_err(api)?;
            match output {
                Output::Table | Output::Wide => {
                    println!("{}", created.token);
                    eprintln!(
                        "token {} for {} nodes, valid until {}; shown only now — join with\n  \
                         cloudlet agent --server URL --token <token>",
                        created.info.id, created.info.role, created.info.expires_at
                    );
                    Ok(())
                }
                other => print_value(&created, other),
            }
        }
        TokenVerb::List { output } => {
            let tokens = client.list_tokens().await.map_err(api)?;
            if !matches!(output, Output::Table | Output::Wide) {
                return print_value(&tokens, output);
            }
            let mut rows = vec![
                ["ID", "ROLE", "EXPIRES", "USES", "CREATED BY", "DESCRIPTION"]
                    .map(String::from)
                    .to_vec(),
            ];
            for t in &tokens {
                let expires = if t.expires_at <= Timestamp::now() {
                    "expired".to_owned()
                } else {
                    format!("in {}", age_until_human(t.expires_at))
                };
                rows.push(vec![
                    t.id.clone(),
                    t.role.clone(),
                    expires,
                    t.uses.to_string(),
                    t.created_by.clone(),
                    t.description.clone().unwrap_or_default(),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        TokenVerb::Revoke { id } => {
            let r = client.revoke_token(&id).await.map_err(api)?;
            println!("{}", r.message);
            Ok(())
        }
    }
}

/// A file's text, or stdin's for `-`.
fn read_input(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("read stdin")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok((display_name(path), text))
}

fn print_service_changes(changes: &[cloudlet_api::dto::ServiceChange]) {
    let mut rows = vec![
        ["SERVICE", "CHANGE", "NODES", "FIELDS"]
            .map(String::from)
            .to_vec(),
    ];
    for c in changes {
        rows.push(vec![
            c.name.clone(),
            c.change.clone(),
            if c.nodes.is_empty() {
                "-".into()
            } else {
                c.nodes.join(",")
            },
            if c.fields.is_empty() {
                "-".into()
            } else {
                c.fields.join(", ")
            },
        ]);
    }
    print_table(&rows);
}

async fn cluster(client: &Client, verb: ClusterVerb) -> anyhow::Result<()> {
    match verb {
        ClusterVerb::Apply {
            file,
            output,
            retry,
        } => {
            let (file, content) = read_input(&file)?;
            let applied = client
                .apply_cluster(&ClusterRequest {
                    file,
                    content,
                    retry,
                })
                .await
                .map_err(api)?;
            if !matches!(output, Output::Table | Output::Wide) {
                return print_value(&applied, output);
            }
            println!("revision {}: {}", applied.revision, applied.summary);
            print_service_changes(&applied.services);
            print_rolling(&applied.services);
            Ok(())
        }
        ClusterVerb::Diff { file, output } => {
            let (file, content) = read_input(&file)?;
            let diff = client
                .diff_cluster(&ClusterRequest {
                    file,
                    content,
                    retry: false,
                })
                .await
                .map_err(api)?;
            if !matches!(output, Output::Table | Output::Wide) {
                return print_value(&diff, output);
            }
            println!("against revision {}:", diff.against);
            for f in &diff.fields {
                println!(
                    "  {}: {} -> {}",
                    f.path,
                    f.old.as_deref().unwrap_or("(unset)"),
                    f.new.as_deref().unwrap_or("(unset)")
                );
            }
            if diff.fields.is_empty() {
                println!("  no field changes");
            }
            print_changes_by_node(&diff.services);
            Ok(())
        }
        ClusterVerb::History { output } => {
            let revisions = client.cluster_history().await.map_err(api)?;
            if !matches!(output, Output::Table | Output::Wide) {
                return print_value(&revisions, output);
            }
            let mut rows = vec![
                ["REVISION", "APPLIED", "BY", "SUMMARY"]
                    .map(String::from)
                    .to_vec(),
            ];
            for r in &revisions {
                rows.push(vec![
                    r.revision.to_string(),
                    format!("{} ({} ago)", r.applied_at, age(r.applied_at)),
                    r.applied_by.clone(),
                    r.summary.clone(),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        ClusterVerb::Rollback { to } => {
            let applied = client
                .rollback_cluster(&RollbackRequest { to })
                .await
                .map_err(api)?;
            println!("revision {}: {}", applied.revision, applied.summary);
            print_service_changes(&applied.services);
            print_rolling(&applied.services);
            Ok(())
        }
        ClusterVerb::Export => {
            print!("{}", client.export_cluster().await.map_err(api)?);
            Ok(())
        }
    }
}

/// Where to follow the services an apply changed: they roll out node by node.
fn print_rolling(changes: &[cloudlet_api::dto::ServiceChange]) {
    let changed: Vec<&str> = changes
        .iter()
        .filter(|c| c.change == "changed")
        .map(|c| c.name.as_str())
        .collect();
    if let Some(first) = changed.first() {
        println!(
            "changed services roll out node by node ({}): cloudlet ctl rollout status {first} --watch",
            changed.join(", ")
        );
    }
}

/// What a diff changes, node by node (a service placed nowhere is under `-`).
fn print_changes_by_node(changes: &[cloudlet_api::dto::ServiceChange]) {
    let mut by_node: std::collections::BTreeMap<&str, Vec<&cloudlet_api::dto::ServiceChange>> =
        std::collections::BTreeMap::new();
    for c in changes.iter().filter(|c| c.change != "unchanged") {
        if c.nodes.is_empty() {
            by_node.entry("-").or_default().push(c);
        }
        for n in &c.nodes {
            by_node.entry(n).or_default().push(c);
        }
    }
    if by_node.is_empty() {
        println!("no service changes");
        return;
    }
    let mut rows = vec![
        ["NODE", "SERVICE", "CHANGE", "FIELDS"]
            .map(String::from)
            .to_vec(),
    ];
    for (node, list) in by_node {
        for c in list {
            rows.push(vec![
                node.to_owned(),
                c.name.clone(),
                c.change.clone(),
                if c.fields.is_empty() {
                    "-".into()
                } else {
                    c.fields.join(", ")
                },
            ]);
        }
    }
    print_table(&rows);
}

async fn rollout(client: &Client, verb: RolloutVerb) -> anyhow::Result<()> {
    match &verb {
        RolloutVerb::Status {
            name,
            watch,
            output,
        } => {
            let mut last = None;
            loop {
                let info = client.rollout(name).await.map_err(api)?;
                let done = !info.state.is_active();
                if last.as_ref() != Some(&info) {
                    if matches!(output, Output::Table | Output::Wide) {
                        print_rollout(&info);
                    } else {
                        print_value(&info, *output)?;
                    }
                }
                if !*watch || done {
                    if *watch && info.state == RolloutState::RolledBack {
                        bail!(
                            "rollout {} of {name} rolled back: {}",
                            info.number,
                            info.message.as_deref().unwrap_or("-")
                        );
                    }
                    return Ok(());
                }
                last = Some(info);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        RolloutVerb::History { name, output } => {
            let list = client.rollout_history(name).await.map_err(api)?;
            if !matches!(output, Output::Table | Output::Wide) {
                return print_value(&list, *output);
            }
            let mut rows = vec![
                [
                    "ROLLOUT", "STATE", "FROM", "TO", "CAUSE", "STARTED", "CHANGED", "MESSAGE",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in &list {
                rows.push(vec![
                    r.number.to_string(),
                    r.state.as_str().to_owned(),
                    r.from.clone().unwrap_or_else(|| "-".into()),
                    r.to.clone(),
                    r.cause.clone(),
                    format!("{} ago", age(r.started_at)),
                    if r.fields.is_empty() {
                        "-".into()
                    } else {
                        r.fields.join(", ")
                    },
                    r.message.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        RolloutVerb::Undo { name, to } => rollout_act(client, name, RolloutAction::Undo, *to).await,
        RolloutVerb::Pause { name } => rollout_act(client, name, RolloutAction::Pause, None).await,
        RolloutVerb::Resume { name } => {
            rollout_act(client, name, RolloutAction::Resume, None).await
        }
    }
}

async fn rollout_act(
    client: &Client,
    name: &str,
    action: RolloutAction,
    to: Option<u64>,
) -> anyhow::Result<()> {
    let info = client
        .rollout_action(name, action, &RolloutRequest { to })
        .await
        .map_err(api)?;
    print_rollout(&info);
    Ok(())
}

/// A rollout and its nodes, for people.
fn print_rollout(r: &cloudlet_api::dto::RolloutInfo) {
    println!(
        "{} rollout {}: {} ({} -> {}, {} at a time, {} per step; cause: {})",
        r.service,
        r.number,
        r.state.as_str(),
        r.from.as_deref().unwrap_or("new"),
        r.to,
        r.max_unavailable,
        r.progress_deadline,
        r.cause
    );
    if let Some(m) = &r.message {
        println!("  {m}");
    }
    let mut rows = vec![
        ["NODE", "STEP", "RUNNING", "ADMITTED", "READY"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &r.nodes {
        let ago =
            |t: Option<Timestamp>| t.map_or_else(|| "-".into(), |t| format!("{} ago", age(t)));
        rows.push(vec![
            n.node.clone(),
            n.state.clone(),
            n.running.clone().unwrap_or_else(|| "-".into()),
            ago(n.admitted_at),
            ago(n.ready_at),
        ]);
    }
    print_table(&rows);
}

/// "5m", "3h", "89d" until `t`.
fn age_until_human(t: Timestamp) -> String {
    let secs = t.duration_since(Timestamp::now()).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Files named on the command line, directories expanded to their `*.yaml` and `*.yml`, sorted.
fn manifest_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p == Path::new("-") {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!(
                    "{}: no *.yaml or *.yml files in this directory",
                    p.display()
                );
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

async fn apply(client: &Client, paths: &[PathBuf], retry: bool) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in manifest_files(paths)? {
        if path == Path::new("-") {
            let mut content = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut content)
                .context("read manifests from stdin")?;
            files.push(ApplyFile {
                name: "<stdin>".to_owned(),
                content,
            });
            continue;
        }
        let content =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        files.push(ApplyFile {
            name: display_name(&path),
            content,
        });
    }
    let response = client
        .apply(&ApplyRequest { files, retry })
        .await
        .map_err(api)?;
    for item in response.items {
        let action = serde_json::to_value(item.action)?;
        let action = action.as_str().unwrap_or("applied");
        match &item.held {
            Some(why) => println!("service/{} {action}: {why}", item.name),
            None => println!("service/{} {action}", item.name),
        }
    }
    Ok(())
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}

fn print_value<T: serde::Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json | Output::Table | Output::Wide => {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Output::Yaml => {
            print!("{}", serde_saphyr::to_string(value).context("encode YAML")?);
        }
    }
    Ok(())
}

/// "3s", "5m", "2h", "4d" since `t`.
fn age(t: Timestamp) -> String {
    let secs = Timestamp::now().duration_since(t).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn exit_text(s: &ServiceStatus) -> String {
    match &s.last_exit {
        None => "-".into(),
        Some(e) => {
            let how = match (&e.code, &e.signal) {
                (Some(c), _) => format!("code {c}"),
                (None, Some(sig)) => sig.clone(),
                _ => e.reason.clone(),
            };
            format!("{how} ({} ago)", age(e.at))
        }
    }
}

fn print_services(services: &[ServiceStatus], output: Output) -> anyhow::Result<()> {
    if !matches!(output, Output::Table | Output::Wide) {
        return print_value(&services, output);
    }
    let mut rows = vec![
        [
            "NAME",
            "STATE",
            "READY",
            "PID",
            "RESTARTS",
            "LAST EXIT",
            "AGE",
            "NODE",
            "INFO",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in services {
        let state = serde_json::to_value(s.state)?
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let info = if !s.waiting_for.is_empty() {
            format!("waiting for {}", s.waiting_for.join(", "))
        } else if let Some(at) = s.next_restart_at {
            format!("restart in {}", age_until(at))
        } else {
            s.message.clone().unwrap_or_default()
        };
        rows.push(vec![
            s.name.clone(),
            state,
            s.ready.to_string(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.restarts.to_string(),
            exit_text(s),
            age(s.since),
            s.node.clone(),
            info,
        ]);
    }
    print_table(&rows);
    if services.is_empty() {
        eprintln!("no services; apply some with `cloudlet ctl apply -f FILE`");
    }
    Ok(())
}

fn age_until(t: Timestamp) -> String {
    let ms = t.duration_since(Timestamp::now()).as_millis().max(0);
    format!("{ms}ms")
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

fn print_detail(d: &ServiceDetail) -> anyhow::Result<()> {
    let s = &d.status;
    let state = serde_json::to_value(s.state)?
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let desired = serde_json::to_value(s.desired)?
        .as_str()
        .unwrap_or("?")
        .to_owned();
    println!("Name:        {}", s.name);
    println!("Node:        {}", s.node);
    println!(
        "State:       {state} (since {}, desired {desired})",
        s.since
    );
    println!("Ready:       {}", s.ready);
    println!(
        "PID:         {}",
        s.pid.map_or("-".into(), |p| p.to_string())
    );
    println!("Run:         {}", s.run);
    println!("Restarts:    {}", s.restarts);
    println!("Last exit:   {}", exit_text(s));
    if !s.waiting_for.is_empty() {
        println!("Waiting for: {}", s.waiting_for.join(", "));
    }
    if let Some(m) = &s.message {
        println!("Message:     {m}");
    }
    if s.dropped_log_lines > 0 {
        println!("Dropped log lines: {}", s.dropped_log_lines);
    }
    println!("Logs:        {}", d.log_dir);
    if let Some(limits) = &s.limits {
        println!("Limits:      {limits}");
    }
    if let Some(u) = &d.usage {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("Cgroup:      {}", u.cgroup);
        println!(
            "  memory:    {} of {}",
            or_dash(u.memory_current.map(|b| format!("{b} bytes"))),
            or_dash(u.memory_max.clone())
        );
        println!(
            "  pids:      {} of {}",
            or_dash(u.pids_current.map(|p| p.to_string())),
            or_dash(u.pids_max.clone())
        );
        println!(
            "  cpu:       {} used, throttled {} times ({})",
            or_dash(
                u.cpu_usage_usec
                    .map(|us| format!("{:.2}s", us as f64 / 1e6))
            ),
            or_dash(u.cpu_nr_throttled.map(|n| n.to_string())),
            or_dash(
                u.cpu_throttled_usec
                    .map(|us| format!("{:.2}s", us as f64 / 1e6))
            )
        );
        println!(
            "  events:    {} OOM kills, {} forks refused by pids.max",
            or_dash(u.oom_kills.map(|n| n.to_string())),
            or_dash(u.pids_max_hits.map(|n| n.to_string()))
        );
        for (resource, p) in &u.pressure {
            println!(
                "  pressure:  {resource} some avg10 {:.2}% avg60 {:.2}%",
                p.avg10, p.avg60
            );
        }
    }
    if !s.labels.is_empty() {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("Labels:      {}", labels.join(", "));
    }
    println!("Manifest:");
    for line in serde_saphyr::to_string(&d.manifest)
        .context("encode YAML")?
        .lines()
    {
        println!("  {line}");
    }
    println!("Events:");
    let mut out = std::io::stdout().lock();
    for ev in &d.events {
        write!(out, "  ")?;
        print_event(&mut out, ev, Output::Table)?;
    }
    Ok(())
}

fn print_event(out: &mut impl Write, ev: &Event, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Table | Output::Wide => {
            let time = ev.time.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            writeln!(
                out,
                "{:<24} {:<16} {:<16} {:<16} {}",
                time,
                ev.node,
                ev.service.as_deref().unwrap_or("-"),
                ev.reason,
                ev.message
            )?;
        }
        Output::Json | Output::Yaml => writeln!(out, "{}", serde_json::to_string(ev)?)?,
    }
    Ok(())
}

/// A command's non-zero exit code, passed through `ctl exec` as ctl's own exit code.
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

fn mib(bytes: u64) -> String {
    format!("{}Mi", bytes >> 20)
}

fn print_nodes(nodes: &[cloudlet_api::dto::NodeStatus], output: Output) -> anyhow::Result<()> {
    let wide = output == Output::Wide;
    if !matches!(output, Output::Table | Output::Wide) {
        return print_value(&nodes, output);
    }
    let mut header = vec![
        "NAME",
        "STATE",
        "ROLES",
        "SERVICES",
        "CPU (REQ/ALLOC)",
        "MEMORY (REQ/ALLOC)",
        "CONDITIONS",
    ];
    if wide {
        header.extend(["ADDRESS", "LABELS", "CERT SERIAL", "CERT EXPIRES", "LIMITS"]);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for n in nodes {
        let conditions: Vec<String> = n
            .conditions
            .iter()
            .filter(|c| c.status)
            .map(|c| format!("{}({})", c.kind, c.severity.as_deref().unwrap_or("warning")))
            .collect();
        let mut state = n.state.clone();
        if n.draining {
            state.push_str(",Draining");
        } else if n.cordoned {
            state.push_str(",Cordoned");
        }
        let mut row = vec![
            n.name.clone(),
            state,
            if n.roles.is_empty() {
                "-".into()
            } else {
                n.roles.join(",")
            },
            n.services.to_string(),
            format!("{}m/{}m", n.requested.cpu_millis, n.allocatable.cpu_millis),
            format!(
                "{}/{}",
                mib(n.requested.memory_bytes),
                mib(n.allocatable.memory_bytes)
            ),
            if conditions.is_empty() {
                "none".into()
            } else {
                conditions.join(",")
            },
        ];
        if wide {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row.extend([
                n.address.clone().unwrap_or_else(|| "(server)".into()),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                n.cert_serial.clone().unwrap_or_else(|| "-".into()),
                n.cert_not_after
                    .map_or("-".into(), |t| format!("{t} (in {})", age_until_human(t))),
                n.limits.clone(),
            ]);
        }
        rows.push(row);
    }
    print_table(&rows);
    Ok(())
}

fn print_network(nets: &[cloudlet_api::dto::NetworkStatus], output: Output) -> anyhow::Result<()> {
    if !matches!(output, Output::Table | Output::Wide) {
        return print_value(&nets, output);
    }
    let mut rows = vec![
        [
            "NODE", "BRIDGE", "PORTS", "UPLINK", "FIREWALL", "REPAIRS", "STATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in nets {
        let state = match (&n.problem, n.connected) {
            (Some(p), _) => p.clone(),
            (None, false) => format!("not connected to {}", n.ovsdb),
            (None, true) => n.reconciled_at.map_or_else(
                || "reconciling".to_owned(),
                |t| format!("in sync ({} ago)", age(t)),
            ),
        };
        let repairs = match &n.last_repair {
            Some(last) if output == Output::Wide => format!("{} (last: {last})", n.repairs),
            _ => n.repairs.to_string(),
        };
        if n.bridges.is_empty() {
            rows.push(vec![
                n.node.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                repairs.clone(),
                state.clone(),
            ]);
        }
        for b in &n.bridges {
            let firewall = match &n.firewall {
                Some(f) if f.bridge == b.name => format!("{} rules, {} flows", f.rules, f.flows),
                _ => "-".into(),
            };
            rows.push(vec![
                n.node.clone(),
                b.name.clone(),
                b.ports.join(","),
                b.uplink.clone().unwrap_or_else(|| "-".into()),
                firewall,
                repairs.clone(),
                state.clone(),
            ]);
        }
    }
    print_table(&rows);
    Ok(())
}

fn print_node(n: &cloudlet_api::dto::NodeStatus) -> anyhow::Result<()> {
    println!("Name:         {}", n.name);
    println!("Observed:     {}", n.observed_at);
    println!("Limits:       {}", n.limits);
    println!(
        "              {:>12} {:>12} {:>12} {:>12}",
        "capacity", "reserve", "allocatable", "requested"
    );
    println!(
        "  cpu         {:>11}m {:>11}m {:>11}m {:>11}m",
        n.capacity.cpu_millis,
        n.reserve.cpu_millis,
        n.allocatable.cpu_millis,
        n.requested.cpu_millis
    );
    println!(
        "  memory      {:>12} {:>12} {:>12} {:>12}",
        mib(n.capacity.memory_bytes),
        mib(n.reserve.memory_bytes),
        mib(n.allocatable.memory_bytes),
        mib(n.requested.memory_bytes)
    );
    println!(
        "  pids        {:>12} {:>12} {:>12}",
        n.capacity.pids, n.reserve.pids, n.allocatable.pids
    );
    println!("Memory available: {}", mib(n.memory_available_bytes));
    println!("Pids in use:      {}", n.pids_in_use);
    println!("Disks:");
    for d in &n.disks {
        println!(
            "  {} (on {}): {} free of {} ({:.1}%)",
            d.path,
            d.mount_point,
            mib(d.free_bytes),
            mib(d.total_bytes),
            d.free_pct
        );
    }
    println!("Conditions (warnings only: cloudlet never evicts):");
    for c in &n.conditions {
        let status = if c.status {
            c.severity.as_deref().unwrap_or("true")
        } else {
            "false"
        };
        println!(
            "  {:<15} {:<9} since {}  {}",
            c.kind, status, c.since, c.reason
        );
    }
    Ok(())
}
