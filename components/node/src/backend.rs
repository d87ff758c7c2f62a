//! The node as seen by the API: `cloudlet_api::Backend` implemented on [`Node`].
//!
//! This is the edge where core types become API DTOs: every conversion is written out here by
//! hand, so neither the supervisor nor the store knows the wire format. It holds no logic of its
//! own beyond mapping verbs to the node's operations and errors to `ApiError` kinds.

use cloudlet_api::dto::{
    self, ActionResponse, ApplyRequest, ApplyResponse, DesiredState, EventsQuery, ExecOutput,
    ExecRequest, ExitInfo, LogLine, LogsQuery, NodeQuery, RunRequest, ServiceDetail, ServiceState,
    ServiceStatus, ServicesQuery,
};
use cloudlet_api::{ApiError, Backend, Caller, EventStream, ExecStream, LogStream};
use cloudlet_logs::{LogQuery, LogRecord, RunSelect};
use cloudlet_store::Store;
use cloudlet_supervisor::{Action, Desired, ExitView, ServiceView, State};

use crate::apply;
use crate::executor;
use crate::records::{DesiredRecord, EventRecord, ServiceRecord, assignment_key};
use crate::{Node, NodeError};

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Invalid(m) => ApiError::Invalid(m),
            NodeError::NotFound(n) => ApiError::NotFound(format!("service {n:?} not found")),
            NodeError::Conflict(m) => ApiError::Conflict(m),
            NodeError::Store(s @ cloudlet_store::StoreError::DiskFull { .. }) => {
                ApiError::Unavailable(s.to_string())
            }
            NodeError::Supervisor(cloudlet_supervisor::SupervisorError::NotFound(n)) => {
                ApiError::NotFound(format!("service {n:?} not found"))
            }
            NodeError::Supervisor(e @ cloudlet_supervisor::SupervisorError::Quarantined { .. }) => {
                ApiError::Conflict(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn state_dto(s: State) -> ServiceState {
    match s {
        State::Waiting => ServiceState::Waiting,
        State::Starting => ServiceState::Starting,
        State::Running => ServiceState::Running,
        State::Backoff => ServiceState::Backoff,
        State::Stopping => ServiceState::Stopping,
        State::Stopped => ServiceState::Stopped,
        State::Failed => ServiceState::Failed,
        State::Completed => ServiceState::Completed,
        State::Invalid => ServiceState::Invalid,
    }
}

fn exit_dto(e: &ExitView) -> ExitInfo {
    ExitInfo {
        code: e.code,
        signal: e.signal.clone(),
        reason: e.reason.clone(),
        at: e.at,
    }
}

fn usage_dto(cg: &cloudlet_cgroups::ServiceCgroup) -> dto::ServiceUsage {
    let stats = cg.stats().ok();
    let max = |m: &cloudlet_cgroups::Max| match m {
        cloudlet_cgroups::Max::Unlimited => "max".to_owned(),
        cloudlet_cgroups::Max::Value(v) => v.to_string(),
    };
    let mut pressure = std::collections::BTreeMap::new();
    if let Some(s) = &stats {
        for (name, p) in [
            ("cpu", &s.pressure.cpu),
            ("memory", &s.pressure.memory),
            ("io", &s.pressure.io),
        ] {
            if let Some(p) = p {
                pressure.insert(
                    name.to_owned(),
                    dto::PressureAverages {
                        avg10: p.some.avg10,
                        avg60: p.some.avg60,
                    },
                );
            }
        }
    }
    dto::ServiceUsage {
        cgroup: cg.path().display().to_string(),
        memory_current: stats.as_ref().and_then(|s| s.memory_current),
        memory_max: stats.as_ref().and_then(|s| s.memory_max.as_ref()).map(max),
        pids_current: stats.as_ref().and_then(|s| s.pids_current),
        pids_max: stats.as_ref().and_then(|s| s.pids_max.as_ref()).map(max),
        cpu_usage_usec: stats
            .as_ref()
            .and_then(|s| s.cpu.as_ref())
            .map(|c| c.usage_usec),
        cpu_nr_throttled: stats
            .as_ref()
            .and_then(|s| s.cpu.as_ref())
            .and_then(|c| c.nr_throttled),
        cpu_throttled_usec: stats
            .as_ref()
            .and_then(|s| s.cpu.as_ref())
            .and_then(|c| c.throttled_usec),
        oom_kills: stats
            .as_ref()
            .and_then(|s| s.memory_events.as_ref())
            .map(|e| e.oom_kill),
        pids_max_hits: stats.as_ref().and_then(|s| s.pids_events_max),
        pressure,
    }
}

fn log_dto(r: LogRecord) -> LogLine {
    LogLine {
        ts: r.ts,
        stream: r.stream.as_str().to_owned(),
        run: r.run,
        partial: r.partial,
        text: r.text,
    }
}

impl<S: Store> Node<S> {
    fn status_dto(&self, v: ServiceView, record: Option<&ServiceRecord>) -> ServiceStatus {
        let transient = record.and_then(|r| r.transient.as_ref());
        let spec_digest = v.run_tag.filter(|t| !t.is_empty());
        ServiceStatus {
            name: v.name,
            node: self.options.node_name.clone(),
            state: state_dto(v.state),
            ready: v.ready,
            pid: v.pid,
            restarts: v.restarts,
            run: v.run,
            last_exit: v.last_exit.as_ref().map(exit_dto),
            since: v.since,
            waiting_for: v.waiting_for,
            message: v.message,
            labels: v.labels,
            desired: match v.desired {
                Desired::Running => DesiredState::Running,
                Desired::Stopped => DesiredState::Stopped,
            },
            next_restart_at: v.next_restart_at,
            dropped_log_lines: v.dropped_log_lines,
            owner: transient.map(|t| t.owner.clone()),
            group: transient.map(|t| t.group.clone()),
            limits: v.limits.or_else(|| {
                self.limits_unenforced
                    .as_ref()
                    .map(|why| format!("not enforced ({why})"))
            }),
            spec_digest,
        }
    }

    async fn view(&self, name: &str) -> Result<ServiceView, NodeError> {
        self.supervisor
            .snapshot()
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| NodeError::NotFound(name.to_owned()))
    }

    async fn record(&self, name: &str) -> Result<ServiceRecord, NodeError> {
        let key = assignment_key(&self.options.node_name, name);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| NodeError::NotFound(name.to_owned()))?;
        ServiceRecord::decode(&key, &kv.value)
    }
}

impl<S: Store> Node<S> {
    /// The service calling on the executor socket ([`executor::executor_service`]), which must
    /// be one given the socket (`spec.executor: true`).
    async fn executor_owner(&self, caller: &Caller) -> Result<String, ApiError> {
        let name = executor::executor_service(caller, self.cgroups.as_deref())?;
        let given = self
            .record(&name)
            .await
            .is_ok_and(|r| r.manifest.spec.executor);
        if !given {
            return Err(ApiError::Forbidden(format!(
                "executor socket: service {name} was not given it (spec.executor: true)"
            )));
        }
        Ok(name)
    }

    /// Who is asking, in words: on the executor socket its service, else
    /// [`executor::caller_name`].
    async fn caller_name(&self, caller: &Caller) -> Result<String, ApiError> {
        match caller.socket {
            cloudlet_api::Socket::Executor if caller.peer.is_none() => {
                self.executor_owner(caller).await
            }
            _ => Ok(executor::caller_name(caller)),
        }
    }
}

impl<S: Store> Backend for Node<S> {
    async fn apply(&self, _request: ApplyRequest) -> Result<ApplyResponse, ApiError> {
        Err(ApiError::NotFound(
            "this is a node's agent: apply manifests on the cluster's server".into(),
        ))
    }

    async fn list_services(&self, query: ServicesQuery) -> Result<Vec<ServiceStatus>, ApiError> {
        if query
            .node
            .as_ref()
            .is_some_and(|n| *n != self.options.node_name)
        {
            return Ok(Vec::new());
        }
        let views = self.supervisor.snapshot().await.map_err(NodeError::from)?;
        // The supervisor's view is the answer; the store only adds owners of transient
        // services. A store that cannot be read (a full disk) does not hide what runs.
        let records = match crate::load_services(&self.store, &self.prefix()).await {
            Ok((records, _)) => records,
            Err(e) => {
                tracing::warn!("list services without the store's records: {e}");
                Default::default()
            }
        };
        Ok(views
            .into_iter()
            .map(|v| {
                let record = records.get(&v.name);
                self.status_dto(v, record)
            })
            .collect())
    }

    async fn describe_service(
        &self,
        name: &str,
        _node: NodeQuery,
    ) -> Result<ServiceDetail, ApiError> {
        let record = self.record(name).await?;
        let mut view = self.view(name).await?;
        if let Ok(Some(live)) = self.supervisor.live_status(name).await {
            view.dropped_log_lines = live.dropped_log_lines;
        }
        let (events, _) = crate::events::read(&self.store, Some(name), None, Some(20)).await?;
        let manifest = serde_json::to_value(redacted(&record.manifest))
            .map_err(|e| ApiError::Internal(format!("encode manifest: {e}")))?;
        let usage =
            cloudlet_supervisor::machine::service_cgroup(self.cgroups.as_deref(), &view.cgroup)
                .map(|cg| usage_dto(&cg));
        Ok(ServiceDetail {
            usage,
            status: self.status_dto(view, Some(&record)),
            manifest,
            events,
            log_dir: self
                .options
                .data_dir
                .join("logs")
                .join(name)
                .display()
                .to_string(),
        })
    }

    async fn delete_service(&self, name: &str) -> Result<ActionResponse, ApiError> {
        let record = self.record(name).await?;
        if record.transient.is_none() {
            return Err(ApiError::Conflict(format!(
                "service {name} was placed here by the cluster's server: delete it there"
            )));
        }
        apply::delete_key(&self.store, &assignment_key(&self.options.node_name, name)).await?;
        self.event(Some(name), "Deleting", "deleted by an operator".into());
        Ok(ActionResponse {
            name: name.to_owned(),
            message: format!("service {name} deleted; its logs are kept"),
        })
    }

    async fn service_action(
        &self,
        name: &str,
        action: dto::Action,
        _node: NodeQuery,
    ) -> Result<ActionResponse, ApiError> {
        let key = assignment_key(&self.options.node_name, name);
        let message = match action {
            dto::Action::Stop => {
                if apply::set_desired(&self.store, &key, name, DesiredRecord::Stopped).await? {
                    self.event(Some(name), "StopRequested", "stopped by an operator".into());
                    format!("service {name} is stopping and stays stopped until `ctl start {name}`")
                } else {
                    format!("service {name} was already stopped")
                }
            }
            dto::Action::Start => {
                apply::set_desired(&self.store, &key, name, DesiredRecord::Running).await?;
                self.supervisor
                    .action(name, Action::Start)
                    .await
                    .map_err(NodeError::from)?;
                self.event(
                    Some(name),
                    "StartRequested",
                    "started by an operator".into(),
                );
                format!("service {name} is starting")
            }
            dto::Action::Restart => {
                self.record(name).await?;
                self.supervisor
                    .action(name, Action::Restart)
                    .await
                    .map_err(NodeError::from)?;
                self.event(
                    Some(name),
                    "RestartRequested",
                    "restarted by an operator".into(),
                );
                format!("service {name} is restarting")
            }
        };
        Ok(ActionResponse {
            name: name.to_owned(),
            message,
        })
    }

    async fn logs(&self, name: &str, query: LogsQuery) -> Result<LogStream, ApiError> {
        // The name becomes a path: only a valid service name may (`../pki` must not).
        cloudlet_spec::check_name(name)
            .map_err(|why| ApiError::Invalid(format!("service name {name:?}: {why}")))?;
        let dir = self.options.data_dir.join("logs").join(name);
        if self.record(name).await.is_err() && !dir.is_dir() {
            return Err(ApiError::NotFound(format!(
                "service {name:?} not found and no logs of it are kept"
            )));
        }
        let q = LogQuery {
            tail: query.tail,
            since: query.since,
            run: if query.previous {
                RunSelect::Previous
            } else {
                RunSelect::All
            },
        };
        if query.follow {
            let follower = cloudlet_logs::follow(&dir, &q)
                .await
                .map_err(NodeError::from)?;
            let stream = futures_util::stream::unfold(follower, |mut f| async move {
                let item = f.next().await?;
                Some((
                    item.map(log_dto)
                        .map_err(|e| ApiError::Internal(e.to_string())),
                    f,
                ))
            });
            Ok(Box::pin(stream))
        } else {
            let records = tokio::task::spawn_blocking(move || cloudlet_logs::read(&dir, &q))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(NodeError::from)?;
            Ok(Box::pin(futures_util::stream::iter(
                records.into_iter().map(|r| Ok(log_dto(r))),
            )))
        }
    }

    async fn nodes(&self) -> Result<Vec<dto::NodeStatus>, ApiError> {
        let Some(snap) = crate::monitor::latest(&self.snapshot) else {
            return Err(ApiError::Unavailable(
                "the node monitor has not read this host yet".into(),
            ));
        };
        let (records, _) = crate::load_services(&self.store, &self.prefix()).await?;
        let requested = apply::requested(records.values().map(|r| &r.manifest));
        let res = |r: cloudlet_host::Resources| dto::NodeResources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            pids: r.pids,
        };
        Ok(vec![dto::NodeStatus {
            name: self.options.node_name.clone(),
            capacity: res(snap.capacity.resources()),
            reserve: res(self.options.monitor.reserve),
            allocatable: res(snap.allocatable),
            requested: res(requested),
            memory_available_bytes: snap.usage.memory_available_bytes,
            pids_in_use: snap.usage.pids_in_use,
            disks: snap
                .usage
                .disks
                .iter()
                .map(|d| dto::NodeDisk {
                    path: d.path.display().to_string(),
                    mount_point: d.mount_point.display().to_string(),
                    total_bytes: d.total_bytes,
                    free_bytes: d.free_bytes,
                    free_pct: d.free_pct().min(d.free_inodes_pct()),
                })
                .collect(),
            conditions: snap
                .conditions
                .iter()
                .map(|c| dto::NodeCondition {
                    kind: c.condition.kind.as_str().to_owned(),
                    status: c.condition.status,
                    severity: c.condition.severity.map(|s| s.as_str().to_owned()),
                    reason: c.condition.reason.clone(),
                    since: c.since,
                })
                .chain(std::iter::once(dto::NodeCondition {
                    kind: "LimitsNotEnforced".to_owned(),
                    status: self.limits_unenforced.is_some(),
                    severity: self
                        .limits_unenforced
                        .as_ref()
                        .map(|_| "warning".to_owned()),
                    reason: self.limits_unenforced.clone().unwrap_or_else(|| {
                        "cpu, memory, pids and io limits are enforced by cgroup v2".to_owned()
                    }),
                    since: self.started_at,
                }))
                .collect(),
            limits: self.limits_unenforced.as_ref().map_or_else(
                || "enforced".to_owned(),
                |why| format!("not enforced ({why})"),
            ),
            observed_at: snap.at,
            roles: Vec::new(),
            labels: Default::default(),
            state: "Ready".to_owned(),
            cordoned: false,
            draining: false,
            address: None,
            last_heartbeat: None,
            cert_not_after: None,
            cert_serial: None,
            services: u64::try_from(records.len()).unwrap_or(u64::MAX),
        }])
    }

    async fn executor_caller(&self, caller: &Caller) -> Result<String, ApiError> {
        self.executor_owner(caller).await
    }

    async fn run(&self, caller: Caller, request: RunRequest) -> Result<ActionResponse, ApiError> {
        let owner = self.caller_name(&caller).await?;
        let record = executor::run(&self.store, &self.options.node_name, &owner, &request).await?;
        let group = record
            .transient
            .as_ref()
            .map_or("", |t| t.group.as_str())
            .to_owned();
        self.event(
            Some(&request.name),
            "Run",
            format!(
                "started for {owner} in group {group}: {}",
                request.command.join(" ")
            ),
        );
        Ok(ActionResponse {
            name: request.name.clone(),
            message: format!(
                "transient service {} started (group {group}, owner {owner}); it runs until \
                 `ctl stop {}` or `ctl delete service {}`",
                request.name, request.name, request.name
            ),
        })
    }

    async fn exec(&self, caller: Caller, request: ExecRequest) -> Result<ExecStream, ApiError> {
        let owner = self.caller_name(&caller).await?;
        let what = request.command.join(" ");
        let events = self.events.clone();
        let node = self.options.node_name.clone();
        let rx = executor::exec(&self.reaper, &request, move |end| {
            let how = match (end.exit, end.timed_out) {
                (_, true) => "killed after its timeout".to_owned(),
                (Some(cloudlet_supervisor::reaper::ChildExit::Code(c)), _) => {
                    format!("exit code {c}")
                }
                (Some(cloudlet_supervisor::reaper::ChildExit::Signal(s)), _) => {
                    format!("killed by signal {s}")
                }
                (None, false) => "lost".to_owned(),
            };
            events.send(EventRecord {
                time: jiff::Timestamp::now(),
                service: None,
                node,
                reason: "Exec".into(),
                message: format!(
                    "{owner} ran `{what}`: {how} after {} ms",
                    end.elapsed.as_millis()
                ),
                exit: None,
            });
        })?;
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let item: ExecOutput = rx.recv().await?;
            Some((Ok(item), rx))
        });
        Ok(Box::pin(stream))
    }

    async fn network(&self, _node: NodeQuery) -> Result<Vec<dto::NetworkStatus>, ApiError> {
        let Some(s) = self.network_status() else {
            return Err(ApiError::NotFound(format!(
                "node {} manages no network (start it with --network FILE)",
                self.options.node_name
            )));
        };
        Ok(vec![dto::NetworkStatus {
            node: self.options.node_name.clone(),
            ovsdb: s.ovsdb,
            connected: s.connected,
            bridges: s
                .bridges
                .into_iter()
                .map(|b| dto::BridgeStatus {
                    name: b.name,
                    ports: b.ports,
                    fail_mode: b.fail_mode,
                    datapath_type: b.datapath_type,
                    uplink: b.uplink,
                })
                .collect(),
            firewall: s
                .firewall
                .map(|(bridge, rules, flows)| dto::FirewallStatus {
                    bridge,
                    rules: u64::try_from(rules).unwrap_or(u64::MAX),
                    flows: u64::try_from(flows).unwrap_or(u64::MAX),
                    applied_at: None,
                }),
            repairs: s.repairs,
            last_repair: s.last_repair,
            reconciled_at: s.reconciled_at,
            problem: s.problem,
        }])
    }

    async fn events(&self, query: EventsQuery) -> Result<EventStream, ApiError> {
        crate::events::stream(&self.store, query).await
    }
}

/// `manifest` as `describe` shows it: the content of every file only its owner may read (mode
/// without group or other read: keys, passwords) replaced by its size and where it is.
pub fn redacted(manifest: &cloudlet_spec::ServiceManifest) -> cloudlet_spec::ServiceManifest {
    let mut shown = manifest.clone();
    for file in &mut shown.spec.files {
        if file.mode_bits() & 0o044 == 0 {
            file.content = format!(
                "<secret: {} bytes, mode {:04o}; read {} on the node>",
                file.content.len(),
                file.mode_bits(),
                file.path.display()
            );
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use cloudlet_spec::{FileSpec, Metadata, ServiceManifest, ServiceSpec};

    #[test]
    fn describe_never_shows_a_file_only_its_owner_may_read() {
        let mut spec = ServiceSpec::new(vec!["/bin/true".into()]);
        for (path, mode) in [
            ("/etc/a.conf", None),
            ("/etc/b.key", Some("0600")),
            ("/etc/c", Some("0640")),
        ] {
            spec.files.push(FileSpec {
                path: path.into(),
                content: "password: hunter2\n".into(),
                mode: mode.map(str::to_owned),
                owner: None,
            });
        }
        let m = ServiceManifest::new(
            Metadata {
                name: "s".into(),
                labels: Default::default(),
            },
            spec,
        );
        let shown = super::redacted(&m);
        let contents: Vec<&str> = shown
            .spec
            .files
            .iter()
            .map(|f| f.content.as_str())
            .collect();
        assert_eq!(
            contents[0], "password: hunter2\n",
            "0644 is readable by anyone anyway"
        );
        assert_eq!(
            contents[1],
            "<secret: 18 bytes, mode 0600; read /etc/b.key on the node>"
        );
        assert!(
            contents[2].contains("hunter2"),
            "group-readable: not a secret file"
        );
        assert_eq!(
            m.spec.files[1].content, "password: hunter2\n",
            "the record is untouched"
        );
    }
}
