//! keystone's v3 API as the bootstrap uses it: a session (a password token scoped to a project,
//! with its service catalog) and "make X exist" calls for regions, services, endpoints, service
//! configs, users, role assignments, policies and roles. Every call is get-then-create (or
//! update), so a step that died halfway is finished by running it again.
//!
//! It never decides what should exist (the plan does) and never deletes anything.

use hyper::Method;
use serde_json::{Map, Value, json};

use crate::CloudpodsError;
use crate::http::{HttpClient, encode};

/// The account a session logs in with.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeystoneLogin {
    /// keystone's admin endpoint, `https://HOST:30357/v3`.
    pub auth_url: String,
    /// User name (in domain `domain`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// The project the token is scoped to.
    pub project: String,
    /// The domain of the user and the project.
    pub domain: String,
}

impl std::fmt::Debug for KeystoneLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneLogin")
            .field("auth_url", &self.auth_url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("project", &self.project)
            .field("domain", &self.domain)
            .finish()
    }
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    /// `public`, `internal`, `admin` (or `slave`, registered disabled).
    pub interface: String,
    /// The URL.
    pub url: String,
}

/// A logged-in session.
#[derive(Debug)]
pub struct Keystone {
    http: HttpClient,
    url: String,
    token: String,
    catalog: Value,
}

/// What [`Keystone`]'s "make it exist" calls did, for the step's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was there as wanted.
    Unchanged,
    /// It was made.
    Created,
    /// It was there and was brought to what is wanted.
    Updated,
}

impl Outcome {
    /// `unchanged`, `created` or `updated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Created => "created",
            Outcome::Updated => "updated",
        }
    }
}

impl Keystone {
    /// Logs in as `login`.
    pub async fn login(http: HttpClient, login: &KeystoneLogin) -> Result<Self, CloudpodsError> {
        let url = login.auth_url.trim_end_matches('/').to_owned();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": login.user, "password": login.password,
                "domain": {"name": login.domain}}}},
            "scope": {"project": {"name": login.project, "domain": {"name": login.domain}}},
        }});
        let answer = http
            .call_ok(
                Method::POST,
                &format!("{url}/auth/tokens"),
                None,
                Some(&body),
            )
            .await?;
        let token = answer.subject_token.ok_or_else(|| CloudpodsError::Answer {
            what: format!("log in to {url} as {}", login.user),
            detail: "no X-Subject-Token header".into(),
        })?;
        let catalog = answer.body["token"]["catalog"].clone();
        Ok(Self {
            http,
            url,
            token,
            catalog,
        })
    }

    /// The URL of the first `interface` endpoint of a service of `service_type` in `region`,
    /// from the session's catalog.
    pub fn catalog_url(&self, service_type: &str, interface: &str, region: &str) -> Option<String> {
        self.catalog
            .as_array()?
            .iter()
            .filter(|s| s["type"] == service_type)
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .find(|e| e["interface"] == interface && e["region_id"] == region)
            .and_then(|e| e["url"].as_str())
            .map(str::to_owned)
    }

    /// Waits until keystone lets this account list services: keystone applies new role
    /// policies only when it refreshes its cache (`rbac_policy_refresh_interval_seconds`, 30 s),
    /// and until then even `sysadmin` gets `403 isClassRbacAllowed`. Logs in again each time (a
    /// token carries what its roles allowed when it was made). Returns how long it took.
    pub async fn wait_for_rbac(
        http: &HttpClient,
        login: &KeystoneLogin,
        limit: std::time::Duration,
    ) -> Result<std::time::Duration, CloudpodsError> {
        let started = tokio::time::Instant::now();
        loop {
            let session = Keystone::login(http.clone(), login).await?;
            let url = format!("{}/services?limit=1", session.url);
            let answer = http
                .call(Method::GET, &url, Some(&session.token), None)
                .await?;
            if answer.status.is_success() {
                return Ok(started.elapsed());
            }
            if answer.status != hyper::StatusCode::FORBIDDEN || started.elapsed() >= limit {
                return Err(CloudpodsError::Http {
                    method: "GET".into(),
                    url,
                    detail: format!(
                        "{} {} (after {:?} of waiting for keystone to apply the policies)",
                        answer.status,
                        crate::http::error_message(&answer.body),
                        started.elapsed()
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// The session's token, for calls to other services.
    pub fn token(&self) -> &str {
        &self.token
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CloudpodsError> {
        let url = format!("{}{path}", self.url);
        Ok(self
            .http
            .call_ok(method, &url, Some(&self.token), body)
            .await?
            .body)
    }

    /// The one object of `collection` (its JSON key `key`) named exactly `name`.
    async fn find(
        &self,
        collection: &str,
        key: &str,
        name: &str,
    ) -> Result<Option<Value>, CloudpodsError> {
        let body = self
            .call(
                Method::GET,
                &format!("/{collection}?name={}", encode(name)),
                None,
            )
            .await?;
        let mut found: Vec<Value> = body[collection]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["name"] == name)
            .cloned()
            .collect();
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(CloudpodsError::Answer {
                what: format!("find {key} {name:?}"),
                detail: format!("{n} objects have that name; remove the extra ones by hand"),
            }),
        }
    }

    /// Makes keystone region `id` exist.
    pub async fn ensure_region(&self, id: &str) -> Result<Outcome, CloudpodsError> {
        let url = format!("{}/regions/{}", self.url, encode(id));
        if self
            .http
            .get_found(&url, Some(&self.token))
            .await?
            .is_some()
        {
            return Ok(Outcome::Unchanged);
        }
        self.call(
            Method::POST,
            "/regions",
            Some(&json!({"region": {"id": id}})),
        )
        .await?;
        Ok(Outcome::Created)
    }

    /// Makes service `name` of `service_type` exist and be enabled; returns its id.
    pub async fn ensure_service(
        &self,
        name: &str,
        service_type: &str,
    ) -> Result<(String, Outcome), CloudpodsError> {
        let (service, outcome) = match self.find("services", "service", name).await? {
            Some(s) => (s, Outcome::Unchanged),
            None => {
                let body =
                    json!({"service": {"name": name, "type": service_type, "enabled": true}});
                let made = self.call(Method::POST, "/services", Some(&body)).await?;
                (made["service"].clone(), Outcome::Created)
            }
        };
        let id = id_of(&service, &format!("service {name}"))?;
        if outcome == Outcome::Unchanged && service["enabled"] == false {
            let body = json!({"service": {"enabled": true}});
            self.call(Method::PATCH, &format!("/services/{id}"), Some(&body))
                .await?;
            return Ok((id, Outcome::Updated));
        }
        Ok((id, outcome))
    }

    /// Makes the `endpoint` of service `service_id` in `region` exist with its URL; a `slave`
    /// endpoint is registered disabled (as the operator does), every other one enabled.
    pub async fn ensure_endpoint(
        &self,
        service_id: &str,
        region: &str,
        endpoint: &Endpoint,
    ) -> Result<Outcome, CloudpodsError> {
        let enabled = endpoint.interface != "slave";
        let body = self
            .call(
                Method::GET,
                &format!(
                    "/endpoints?service_id={}&region_id={}&interface={}",
                    encode(service_id),
                    encode(region),
                    encode(&endpoint.interface)
                ),
                None,
            )
            .await?;
        let existing = body["endpoints"].as_array().and_then(|list| {
            list.iter().find(|e| {
                e["service_id"] == service_id
                    && e["region_id"] == region
                    && e["interface"] == endpoint.interface.as_str()
            })
        });
        match existing {
            None => {
                let body = json!({"endpoint": {
                    "service_id": service_id, "region_id": region,
                    "interface": endpoint.interface, "url": endpoint.url, "enabled": enabled}});
                self.call(Method::POST, "/endpoints", Some(&body)).await?;
                Ok(Outcome::Created)
            }
            Some(e) if e["url"] == endpoint.url.as_str() && e["enabled"] == enabled => {
                Ok(Outcome::Unchanged)
            }
            Some(e) => {
                let id = id_of(e, "endpoint")?;
                let body = json!({"endpoint": {"url": endpoint.url, "enabled": enabled}});
                self.call(Method::PUT, &format!("/endpoints/{id}"), Some(&body))
                    .await?;
                Ok(Outcome::Updated)
            }
        }
    }

    /// Adds to service `name`'s config (section `default`) every key of `defaults` it does not
    /// have yet; keys already set (by an operator, say) are left as they are.
    pub async fn ensure_service_config(
        &self,
        name: &str,
        defaults: &Map<String, Value>,
    ) -> Result<Outcome, CloudpodsError> {
        let path = format!("/services/{}/config", encode(name));
        let body = self.call(Method::GET, &path, None).await?;
        let current = body["service"]["config"]["default"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let missing: Map<String, Value> = defaults
            .iter()
            .filter(|(k, _)| !current.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if missing.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        let mut merged = current;
        merged.extend(missing);
        let body = json!({"service": {"config": {"default": merged}}});
        self.call(Method::POST, &path, Some(&body)).await?;
        Ok(Outcome::Updated)
    }

    /// Makes user `name` exist as a system account with `password` (set again when the user
    /// exists: the password cloudlet keeps is the one that counts), and gives it `role` in
    /// `project`.
    pub async fn ensure_service_account(
        &self,
        name: &str,
        password: &str,
        project: &str,
        role: &str,
    ) -> Result<Outcome, CloudpodsError> {
        let (user, mut outcome) = match self.find("users", "user", name).await? {
            Some(u) => (u, Outcome::Unchanged),
            None => {
                let body = json!({"user": {"name": name, "password": password,
                    "is_system_account": true, "allow_web_console": false}});
                let made = self.call(Method::POST, "/users", Some(&body)).await?;
                (made["user"].clone(), Outcome::Created)
            }
        };
        let user_id = id_of(&user, &format!("user {name}"))?;
        if outcome == Outcome::Unchanged {
            let body = json!({"user": {"password": password}});
            self.call(Method::PATCH, &format!("/users/{user_id}"), Some(&body))
                .await?;
        }
        let project_id = match self.find("projects", "project", project).await? {
            Some(p) => id_of(&p, &format!("project {project}"))?,
            None => {
                return Err(CloudpodsError::Answer {
                    what: format!("give {name} role {role} in project {project}"),
                    detail: format!("keystone has no project {project:?}"),
                });
            }
        };
        let role_id = match self.find("roles", "role", role).await? {
            Some(r) => id_of(&r, &format!("role {role}"))?,
            None => {
                return Err(CloudpodsError::Answer {
                    what: format!("give {name} role {role} in project {project}"),
                    detail: format!("keystone has no role {role:?}"),
                });
            }
        };
        let assigned = self
            .call(
                Method::GET,
                &format!("/projects/{project_id}/users/{user_id}/roles"),
                None,
            )
            .await?;
        let has = assigned["roles"]
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r["id"] == role_id.as_str()));
        if !has {
            self.call(
                Method::PUT,
                &format!("/projects/{project_id}/users/{user_id}/roles/{role_id}"),
                Some(&json!({})),
            )
            .await?;
            if outcome == Outcome::Unchanged {
                outcome = Outcome::Updated;
            }
        }
        Ok(outcome)
    }

    /// Makes policy `name` exist with `scope` and `rules`, enabled, public and marked as a
    /// system policy; an existing one with other rules or flags is updated.
    pub async fn ensure_policy(
        &self,
        name: &str,
        scope: &str,
        rules: &Value,
    ) -> Result<Outcome, CloudpodsError> {
        let blob = json!({"policy": rules});
        let wanted = json!({"policy": {"name": name, "type": name, "description": name,
            "scope": scope, "blob": blob, "enabled": true, "is_public": true, "is_system": true}});
        match self.find("policies", "policy", name).await? {
            None => {
                self.call(Method::POST, "/policies", Some(&wanted)).await?;
                Ok(Outcome::Created)
            }
            Some(p)
                if p["blob"] == blob
                    && p["scope"] == scope
                    && p["enabled"] == true
                    && p["is_system"] == true =>
            {
                Ok(Outcome::Unchanged)
            }
            Some(p) => {
                let id = id_of(&p, &format!("policy {name}"))?;
                self.call(Method::PUT, &format!("/policies/{id}"), Some(&wanted))
                    .await?;
                Ok(Outcome::Updated)
            }
        }
    }

    /// Makes role `name` exist (public to every domain unless `project` binds it to one
    /// project) and carry `policies` (by name), bound in `project` when given.
    pub async fn ensure_role(
        &self,
        name: &str,
        policies: &[&str],
        project: Option<&str>,
    ) -> Result<Outcome, CloudpodsError> {
        let public = project.is_none();
        let (role, mut outcome) = match self.find("roles", "role", name).await? {
            Some(r) => (r, Outcome::Unchanged),
            None => {
                let scope = if public { "system" } else { "none" };
                let body = json!({"role": {"name": name, "description": name,
                    "is_public": public, "public_scope": scope}});
                let made = self.call(Method::POST, "/roles", Some(&body)).await?;
                (made["role"].clone(), Outcome::Created)
            }
        };
        let role_id = id_of(&role, &format!("role {name}"))?;
        let bound: Vec<&str> = role["match_policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for policy in policies.iter().filter(|p| !bound.contains(p)) {
            let mut body = json!({"role": {"policy_id": policy}});
            if let Some(project) = project {
                body["role"]["project_id"] = json!(project);
            }
            self.call(
                Method::POST,
                &format!("/roles/{role_id}/add-policy"),
                Some(&body),
            )
            .await?;
            if outcome == Outcome::Unchanged {
                outcome = Outcome::Updated;
            }
        }
        Ok(outcome)
    }
}

/// The `id` of an object keystone returned.
fn id_of(object: &Value, what: &str) -> Result<String, CloudpodsError> {
    object["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CloudpodsError::Answer {
            what: what.to_owned(),
            detail: format!("no id in {}", crate::http::error_message(object)),
        })
}
