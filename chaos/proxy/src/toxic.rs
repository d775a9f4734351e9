//! Toxics as Toxiproxy defines them: a type, a stream, a toxicity and attributes.

use serde_json::{json, Map, Value};

/// Which way the bytes flow: `upstream` = client -> server, `downstream` = server -> client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upstream" => Some(Stream::Upstream),
            "downstream" => Some(Stream::Downstream),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// Toxic types and their attributes (milliseconds unless noted), as in Toxiproxy 2.x.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Passes data unchanged.
    Noop,
    /// Delays each chunk by `latency` +/- `jitter`; order is kept.
    Latency { latency: u64, jitter: u64 },
    /// At most `rate` KB/s.
    Bandwidth { rate: u64 },
    /// Delays the close after the other side closed.
    SlowClose { delay: u64 },
    /// Stops all data (dropped); closes the connection after `timeout` (0 = never).
    Timeout { timeout: u64 },
    /// Resets the connection (TCP RST) `timeout` after the toxic applies to it.
    ResetPeer { timeout: u64 },
    /// Writes data in pieces of `average_size` +/- `size_variation` bytes, `delay` µs apart.
    Slicer {
        average_size: u64,
        size_variation: u64,
        delay: u64,
    },
    /// Closes the connection once `bytes` went through in this stream.
    LimitData { bytes: u64 },
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Noop => "noop",
            Kind::Latency { .. } => "latency",
            Kind::Bandwidth { .. } => "bandwidth",
            Kind::SlowClose { .. } => "slow_close",
            Kind::Timeout { .. } => "timeout",
            Kind::ResetPeer { .. } => "reset_peer",
            Kind::Slicer { .. } => "slicer",
            Kind::LimitData { .. } => "limit_data",
        }
    }

    fn attributes(&self) -> Value {
        match *self {
            Kind::Noop => json!({}),
            Kind::Latency { latency, jitter } => json!({"latency": latency, "jitter": jitter}),
            Kind::Bandwidth { rate } => json!({"rate": rate}),
            Kind::SlowClose { delay } => json!({"delay": delay}),
            Kind::Timeout { timeout } => json!({"timeout": timeout}),
            Kind::ResetPeer { timeout } => json!({"timeout": timeout}),
            Kind::Slicer {
                average_size,
                size_variation,
                delay,
            } => {
                json!({"average_size": average_size, "size_variation": size_variation, "delay": delay})
            }
            Kind::LimitData { bytes } => json!({"bytes": bytes}),
        }
    }

    fn from_attributes(ty: &str, attrs: &Map<String, Value>) -> Result<Self, String> {
        let get = |key: &str| -> Result<u64, String> {
            match attrs.get(key) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .ok_or_else(|| format!("attribute {key} must be a non-negative number")),
            }
        };
        Ok(match ty {
            "noop" => Kind::Noop,
            "latency" => Kind::Latency {
                latency: get("latency")?,
                jitter: get("jitter")?,
            },
            "bandwidth" => Kind::Bandwidth { rate: get("rate")? },
            "slow_close" => Kind::SlowClose {
                delay: get("delay")?,
            },
            "timeout" => Kind::Timeout {
                timeout: get("timeout")?,
            },
            "reset_peer" => Kind::ResetPeer {
                timeout: get("timeout")?,
            },
            "slicer" => {
                let average_size = get("average_size")?;
                let size_variation = get("size_variation")?;
                if average_size == 0 {
                    return Err("slicer: average_size must be > 0".into());
                }
                if size_variation >= average_size {
                    return Err("slicer: size_variation must be less than average_size".into());
                }
                Kind::Slicer {
                    average_size,
                    size_variation,
                    delay: get("delay")?,
                }
            }
            "limit_data" => Kind::LimitData {
                bytes: get("bytes")?,
            },
            other => return Err(format!("Bad toxic type: {other}")),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Toxic {
    pub name: String,
    pub stream: Stream,
    pub toxicity: f64,
    pub kind: Kind,
}

impl Toxic {
    /// A toxic from the JSON body of `POST /proxies/{proxy}/toxics`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("toxic must be a JSON object")?;
        let ty = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or("missing required field: type")?;
        let stream = match o.get("stream").or_else(|| o.get("direction")) {
            None | Some(Value::Null) => Stream::Downstream,
            Some(s) => s
                .as_str()
                .and_then(Stream::parse)
                .ok_or("stream must be upstream or downstream")?,
        };
        let toxicity = match o.get("toxicity") {
            None | Some(Value::Null) => 1.0,
            Some(t) => t.as_f64().ok_or("toxicity must be a number")?,
        };
        if !(0.0..=1.0).contains(&toxicity) {
            return Err("toxicity must be between 0 and 1".into());
        }
        let empty = Map::new();
        let attrs = match o.get("attributes") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => return Err("attributes must be an object".into()),
        };
        let kind = Kind::from_attributes(ty, attrs)?;
        let name = match o.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => format!("{}_{}", ty, stream.as_str()),
        };
        Ok(Toxic {
            name,
            stream,
            toxicity,
            kind,
        })
    }

    /// This toxic with the fields of an update body applied (attributes merge).
    pub fn updated(&self, patch: &Value) -> Result<Self, String> {
        let p = patch.as_object().ok_or("toxic must be a JSON object")?;
        let mut attrs = match self.kind.attributes() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if let Some(Value::Object(new)) = p.get("attributes") {
            for (k, v) in new {
                attrs.insert(k.clone(), v.clone());
            }
        }
        let toxicity = match p.get("toxicity") {
            None | Some(Value::Null) => self.toxicity,
            Some(t) => t.as_f64().ok_or("toxicity must be a number")?,
        };
        if !(0.0..=1.0).contains(&toxicity) {
            return Err("toxicity must be between 0 and 1".into());
        }
        Ok(Toxic {
            name: self.name.clone(),
            stream: self.stream,
            toxicity,
            kind: Kind::from_attributes(self.kind.type_name(), &attrs)?,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind.type_name(),
            "stream": self.stream.as_str(),
            "toxicity": self.toxicity,
            "attributes": self.kind.attributes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_toxiproxy() {
        let t =
            Toxic::from_json(&json!({"type": "latency", "attributes": {"latency": 100}})).unwrap();
        assert_eq!(t.name, "latency_downstream");
        assert_eq!(t.stream, Stream::Downstream);
        assert_eq!(t.toxicity, 1.0);
        assert_eq!(
            t.kind,
            Kind::Latency {
                latency: 100,
                jitter: 0
            }
        );
        let u = t.updated(&json!({"attributes": {"jitter": 20}})).unwrap();
        assert_eq!(
            u.kind,
            Kind::Latency {
                latency: 100,
                jitter: 20
            }
        );
        assert!(Toxic::from_json(&json!({"type": "nope"})).is_err());
        assert!(Toxic::from_json(
            &json!({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}})
        )
        .is_err());
        assert!(Toxic::from_json(&json!({"type": "timeout", "toxicity": 2})).is_err());
    }
}
