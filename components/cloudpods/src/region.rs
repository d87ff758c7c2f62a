//! region's API as the bootstrap uses it (the operator's region `SystemInit`): the zones, the
//! default wire of the first zone, and the scheduler's default tags, each found by name before
//! it is made.
//!
//! It never decides names (the plan does) and never deletes anything.

use hyper::Method;
use serde_json::{Value, json};

use crate::CloudpodsError;
use crate::http::{HttpClient, encode};
use crate::keystone::Outcome;

/// region's API at `url` (its `compute_v2` endpoint), called with a keystone token.
#[derive(Debug)]
pub struct Region<'a> {
    http: &'a HttpClient,
    url: String,
    token: &'a str,
}

impl<'a> Region<'a> {
    /// region at `url`, with `token`.
    pub fn new(http: &'a HttpClient, url: &str, token: &'a str) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The object of `collection` (JSON key `key`) called `name`: by id or name, as region's
    /// `GET /collection/NAME` answers, else by the `name` filter.
    async fn find(
        &self,
        collection: &str,
        key: &str,
        name: &str,
    ) -> Result<Option<Value>, CloudpodsError> {
        let url = format!("{}/{collection}/{}", self.url, encode(name));
        if let Some(found) = self.http.get_found(&url, Some(self.token)).await? {
            return Ok(Some(found[key].clone()));
        }
        let url = format!(
            "{}/{collection}?name={}&scope=system",
            self.url,
            encode(name)
        );
        let body = self
            .http
            .call_ok(Method::GET, &url, Some(self.token), None)
            .await?
            .body;
        Ok(body[collection]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["name"] == name)
            .cloned())
    }

    /// Makes the object `name` of `collection` exist, posting `body` to `create` when it does
    /// not; returns it and what was done.
    pub async fn ensure(
        &self,
        collection: &str,
        key: &str,
        name: &str,
        create: &str,
        body: &Value,
    ) -> Result<(Value, Outcome), CloudpodsError> {
        if let Some(found) = self.find(collection, key, name).await? {
            return Ok((found, Outcome::Unchanged));
        }
        let url = format!("{}/{create}", self.url);
        let made = self
            .http
            .call_ok(Method::POST, &url, Some(self.token), Some(body))
            .await?
            .body;
        Ok((made[key].clone(), Outcome::Created))
    }

    /// Zone `name`.
    pub async fn ensure_zone(&self, name: &str) -> Result<Outcome, CloudpodsError> {
        let body = json!({"zone": {"name": name}});
        Ok(self.ensure("zones", "zone", name, "zones", &body).await?.1)
    }

    /// Wire `name` in zone `zone` (1000 Mbps, in the default VPC), as the operator's `bcast0`.
    pub async fn ensure_wire(&self, zone: &str, name: &str) -> Result<Outcome, CloudpodsError> {
        let body = json!({"wire": {"name": name, "bandwidth": 1000, "vpc": "default"}});
        let create = format!("zones/{}/wires", encode(zone));
        Ok(self.ensure("wires", "wire", name, &create, &body).await?.1)
    }

    /// The scheduler's default tags: prefer hosts of the server's project (`same_project`) and,
    /// for cloud hosts, of its cloud provider project (`same_cloudprovider_project`).
    pub async fn ensure_schedtags(&self) -> Result<Vec<Outcome>, CloudpodsError> {
        let body = json!({"schedtag": {"name": "same_project", "default_strategy": "prefer",
            "description": "Prefer hosts belongs to same project"}});
        let (tag, first) = self
            .ensure("schedtags", "schedtag", "same_project", "schedtags", &body)
            .await?;
        let tag_id = tag["id"].as_str().ok_or_else(|| CloudpodsError::Answer {
            what: "schedtag same_project".into(),
            detail: "no id".into(),
        })?;
        let body = json!({"dynamicschedtag": {"name": "same_cloudprovider_project",
            "schedtag": tag_id, "enabled": true,
            "condition": "host.cloudprovider.tenant_id == server.owner_tenant_id"}});
        let (_, second) = self
            .ensure(
                "dynamicschedtags",
                "dynamicschedtag",
                "same_cloudprovider_project",
                "dynamicschedtags",
                &body,
            )
            .await?;
        Ok(vec![first, second])
    }
}
