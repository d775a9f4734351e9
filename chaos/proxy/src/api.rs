//! Toxiproxy's HTTP API (2.x): proxies, toxics, populate, reset, version.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::http::{Request, Response};
use crate::proxy::Proxy;
use crate::toxic::Toxic;

pub const VERSION: &str = "2.9.0-chaosproxy";

#[derive(Default)]
pub struct State {
    proxies: Mutex<BTreeMap<String, Proxy>>,
}

fn err(status: u16, msg: impl Into<String>) -> Response {
    Response::json(status, &json!({"error": msg.into(), "status": status}))
}

fn proxy_json(p: &Proxy) -> Value {
    json!({
        "name": p.name,
        "listen": p.listen_addr(),
        "upstream": p.upstream,
        "enabled": p.enabled,
        "toxics": p.toxics.iter().map(Toxic::to_json).collect::<Vec<_>>(),
    })
}

fn parse(body: &[u8]) -> Result<Value, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| err(400, format!("bad request body: {e}")))
}

impl State {
    pub fn handle(&self, req: Request) -> Response {
        let segs: Vec<&str> = req
            .path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let m = req.method.as_str();
        let body = match parse(&req.body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        match (m, segs.as_slice()) {
            ("GET", ["version"]) => Response::json(200, &json!({"version": VERSION})),
            ("POST", ["reset"]) => self.reset(),
            ("GET", ["proxies"]) => self.list(),
            ("POST", ["proxies"]) => self.create(&body),
            ("POST", ["populate"]) => self.populate(&body),
            ("GET", ["proxies", p]) => self.with(p, |px| Response::json(200, &proxy_json(px))),
            ("POST" | "PATCH", ["proxies", p]) => self.update(p, &body),
            ("DELETE", ["proxies", p]) => {
                let removed = self.proxies.lock().unwrap().remove(*p);
                match removed {
                    Some(mut px) => {
                        px.stop();
                        eprintln!("chaosproxy: deleted proxy {p}");
                        Response::empty(204)
                    }
                    None => err(404, "proxy not found"),
                }
            }
            ("GET", ["proxies", p, "toxics"]) => self.with(p, |px| {
                Response::json(
                    200,
                    &Value::Array(px.toxics.iter().map(Toxic::to_json).collect()),
                )
            }),
            ("POST", ["proxies", p, "toxics"]) => self.add_toxic(p, &body),
            ("GET", ["proxies", p, "toxics", t]) => {
                self.with(p, |px| match px.toxics.iter().find(|x| x.name == *t) {
                    Some(x) => Response::json(200, &x.to_json()),
                    None => err(404, "toxic not found"),
                })
            }
            ("POST" | "PATCH", ["proxies", p, "toxics", t]) => self.update_toxic(p, t, &body),
            ("DELETE", ["proxies", p, "toxics", t]) => self.with_mut(p, |px| {
                let before = px.toxics.len();
                let left: Vec<Toxic> = px.toxics.iter().filter(|x| x.name != *t).cloned().collect();
                if left.len() == before {
                    return err(404, "toxic not found");
                }
                px.set_toxics(left);
                eprintln!("chaosproxy: {}: removed toxic {t}", px.name);
                Response::empty(204)
            }),
            (_, ["version" | "reset" | "proxies" | "populate", ..]) => {
                err(405, "method not allowed")
            }
            _ => err(404, "not found"),
        }
    }

    fn with(&self, name: &str, f: impl FnOnce(&Proxy) -> Response) -> Response {
        match self.proxies.lock().unwrap().get(name) {
            Some(p) => f(p),
            None => err(404, "proxy not found"),
        }
    }

    fn with_mut(&self, name: &str, f: impl FnOnce(&mut Proxy) -> Response) -> Response {
        match self.proxies.lock().unwrap().get_mut(name) {
            Some(p) => f(p),
            None => err(404, "proxy not found"),
        }
    }

    fn list(&self) -> Response {
        let ps = self.proxies.lock().unwrap();
        let map: serde_json::Map<String, Value> =
            ps.iter().map(|(k, p)| (k.clone(), proxy_json(p))).collect();
        Response::json(200, &Value::Object(map))
    }

    /// A new proxy from a JSON description, started when `enabled` (default true).
    fn build(v: &Value) -> Result<Proxy, Response> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let name = s("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err(400, "missing required field: name"))?;
        let upstream = s("upstream")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err(400, "missing required field: upstream"))?;
        let listen = s("listen")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let mut p = Proxy::new(name, listen, upstream);
        if v.get("enabled").and_then(Value::as_bool).unwrap_or(true) {
            p.start().map_err(|e| err(500, e))?;
        }
        Ok(p)
    }

    fn create(&self, body: &Value) -> Response {
        let name = body.get("name").and_then(Value::as_str).unwrap_or("");
        if self.proxies.lock().unwrap().contains_key(name) {
            return err(409, "proxy already exists");
        }
        match Self::build(body) {
            Ok(p) => {
                let out = proxy_json(&p);
                let mut ps = self.proxies.lock().unwrap();
                if ps.contains_key(&p.name) {
                    return err(409, "proxy already exists");
                }
                eprintln!(
                    "chaosproxy: created proxy {} ({} -> {})",
                    p.name,
                    p.listen_addr(),
                    p.upstream
                );
                ps.insert(p.name.clone(), p);
                Response::json(201, &out)
            }
            Err(r) => r,
        }
    }

    /// Creates the given proxies; one that exists with another listen or upstream is replaced.
    fn populate(&self, body: &Value) -> Response {
        let list = match body {
            Value::Array(a) => a.clone(),
            Value::Object(o) => match o.get("proxies") {
                Some(Value::Array(a)) => a.clone(),
                _ => return err(400, "populate expects a JSON array of proxies"),
            },
            _ => return err(400, "populate expects a JSON array of proxies"),
        };
        let mut out = Vec::new();
        for v in &list {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            {
                let mut ps = self.proxies.lock().unwrap();
                if let Some(existing) = ps.get(&name) {
                    let same = v.get("upstream").and_then(Value::as_str)
                        == Some(existing.upstream.as_str())
                        && v.get("listen")
                            .and_then(Value::as_str)
                            .is_none_or(|l| l == existing.listen);
                    if same {
                        out.push(proxy_json(existing));
                        continue;
                    }
                    if let Some(mut old) = ps.remove(&name) {
                        old.stop();
                    }
                }
            }
            match Self::build(v) {
                Ok(p) => {
                    out.push(proxy_json(&p));
                    self.proxies.lock().unwrap().insert(p.name.clone(), p);
                }
                Err(r) => {
                    let mut e = serde_json::from_str::<Value>(r.body.as_deref().unwrap_or("{}"))
                        .unwrap_or(json!({}));
                    e["proxies"] = Value::Array(out);
                    return Response::json(r.status, &e);
                }
            }
        }
        Response::json(201, &json!({"proxies": out}))
    }

    fn update(&self, name: &str, body: &Value) -> Response {
        self.with_mut(name, |p| {
            let mut restart = false;
            if let Some(l) = body.get("listen").and_then(Value::as_str) {
                if l != p.listen {
                    p.listen = l.to_owned();
                    restart = true;
                }
            }
            if let Some(u) = body.get("upstream").and_then(Value::as_str) {
                if u != p.upstream {
                    p.upstream = u.to_owned();
                    restart = true;
                }
            }
            let enabled = body
                .get("enabled")
                .and_then(Value::as_bool)
                .unwrap_or(p.enabled);
            if restart || !enabled {
                p.stop();
            }
            if enabled {
                if let Err(e) = p.start() {
                    return err(500, e);
                }
            }
            Response::json(200, &proxy_json(p))
        })
    }

    fn add_toxic(&self, name: &str, body: &Value) -> Response {
        let t = match Toxic::from_json(body) {
            Ok(t) => t,
            Err(e) => return err(400, e),
        };
        self.with_mut(name, |p| {
            if p.toxics.iter().any(|x| x.name == t.name) {
                return err(409, "toxic already exists");
            }
            let mut list = p.toxics.clone();
            list.push(t.clone());
            p.set_toxics(list);
            eprintln!("chaosproxy: {}: added toxic {}", p.name, t.to_json());
            Response::json(200, &t.to_json())
        })
    }

    fn update_toxic(&self, name: &str, toxic: &str, body: &Value) -> Response {
        self.with_mut(name, |p| {
            let Some(i) = p.toxics.iter().position(|x| x.name == toxic) else {
                return err(404, "toxic not found");
            };
            let t = match p.toxics[i].updated(body) {
                Ok(t) => t,
                Err(e) => return err(400, e),
            };
            let mut list = p.toxics.clone();
            list[i] = t.clone();
            p.set_toxics(list);
            eprintln!("chaosproxy: {}: updated toxic {}", p.name, t.to_json());
            Response::json(200, &t.to_json())
        })
    }

    /// Every proxy enabled, every toxic removed.
    fn reset(&self) -> Response {
        let mut ps = self.proxies.lock().unwrap();
        for p in ps.values_mut() {
            p.set_toxics(Vec::new());
            if let Err(e) = p.start() {
                return err(500, e);
            }
        }
        eprintln!("chaosproxy: reset");
        Response::empty(204)
    }

    /// Proxies from a config file (a JSON array, as `toxiproxy-server -config`).
    pub fn load(&self, text: &str) -> Result<usize, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let r = self.populate(&v);
        if r.status != 201 {
            return Err(r.body.unwrap_or_default());
        }
        Ok(v.as_array().map_or(0, Vec::len))
    }
}
