// An Alertmanager webhook notification (payload version 4), checked field by field before any
// command runs, and the environment a command gets from it: the group's labels as variables.

use serde_json::{Map, Value};

/// What a command needs from one notification; `body` is passed on stdin unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Alertmanager's `groupKey`: at most one command runs per group at a time.
    pub group_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub receiver: String,
    /// The labels every alert of the group shares (`commonLabels`), sorted by name.
    pub labels: Vec<(String, String)>,
    /// How many alerts, and how many of them firing.
    pub alerts: usize,
    pub firing: usize,
    pub body: Vec<u8>,
}

/// Checks `body` as Alertmanager's webhook JSON (version 4): the reason it is not, with the
/// JSON path of the first field that is wrong.
pub fn parse(body: &[u8]) -> Result<Notification, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let root = value.as_object().ok_or("expected a JSON object (Alertmanager's webhook notification)")?;
    let text = |obj: &Map<String, Value>, key: &str, at: &str| -> Result<String, String> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{at}{key}: expected a string")),
            None => Err(format!("{at}{key}: missing")),
        }
    };
    let version = text(root, "version", "")?;
    if version != "4" {
        return Err(format!("version: expected \"4\" (Alertmanager's webhook payload), got {version:?}"));
    }
    let group_key = text(root, "groupKey", "")?;
    if group_key.is_empty() {
        return Err("groupKey: expected a non-empty string".into());
    }
    let status = text(root, "status", "")?;
    check_status(&status, "status")?;
    let receiver = text(root, "receiver", "")?;
    let labels = string_map(root.get("commonLabels"), "commonLabels")?;
    let list = match root.get("alerts") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err("alerts: expected an array".into()),
        None => return Err("alerts: missing".into()),
    };
    if list.is_empty() {
        return Err("alerts: expected at least one alert".into());
    }
    let mut firing = 0;
    for (i, alert) in list.iter().enumerate() {
        let at = format!("alerts[{i}].");
        let alert = alert.as_object().ok_or_else(|| format!("alerts[{i}]: expected an object"))?;
        let state = text(alert, "status", &at)?;
        check_status(&state, &format!("{at}status"))?;
        firing += usize::from(state == "firing");
        string_map(alert.get("labels"), &format!("{at}labels"))?;
    }
    Ok(Notification { group_key, status, receiver, labels, alerts: list.len(), firing, body: body.to_vec() })
}

fn check_status(status: &str, at: &str) -> Result<(), String> {
    match status {
        "firing" | "resolved" => Ok(()),
        other => Err(format!("{at}: expected \"firing\" or \"resolved\", got {other:?}")),
    }
}

/// A label set: an object of strings, sorted by name.
fn string_map(value: Option<&Value>, at: &str) -> Result<Vec<(String, String)>, String> {
    let obj = match value {
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(format!("{at}: expected an object of labels")),
        None => return Err(format!("{at}: missing")),
    };
    let mut labels = Vec::new();
    for (k, v) in obj {
        let v = v.as_str().ok_or_else(|| format!("{at}.{k}: expected a string"))?;
        labels.push((k.clone(), v.to_string()));
    }
    labels.sort();
    Ok(labels)
}

impl Notification {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The command's environment: `EBB_ALERT` (alertname), `EBB_POOL` (`ebb_pool`, else `pool`),
    /// `EBB_STATUS`, `EBB_RECEIVER`, `EBB_GROUP_KEY`, and every common label as
    /// `EBB_LABEL_<NAME>` (upper case, anything but letters and digits as `_`).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("EBB_ALERT".to_string(), self.label("alertname").unwrap_or_default().to_string()),
            ("EBB_POOL".to_string(), self.label("ebb_pool").or(self.label("pool")).unwrap_or_default().to_string()),
            ("EBB_STATUS".to_string(), self.status.clone()),
            ("EBB_RECEIVER".to_string(), self.receiver.clone()),
            ("EBB_GROUP_KEY".to_string(), self.group_key.clone()),
        ];
        for (k, v) in &self.labels {
            let name: String =
                k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            env.push((format!("EBB_LABEL_{name}"), v.clone()));
        }
        env
    }

    /// `alertname=EbbPoolBelowExpectedCapacity, ebb_pool=web`: the group, for log lines.
    pub fn describe(&self) -> String {
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if labels.is_empty() {
            self.group_key.clone()
        } else {
            labels.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Alertmanager 0.25 sends for deploy/alertmanager/ebb-gameday.yml's route.
    const SENT: &str = r#"{"receiver":"recover-pool","status":"firing","alerts":[{"status":"firing",
      "labels":{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"web","severity":"page"},
      "annotations":{"summary":"web below expected"},"startsAt":"2026-12-01T17:03:04.5Z",
      "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph","fingerprint":"a1"}],
      "groupLabels":{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"web"},
      "commonLabels":{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"web","severity":"page"},
      "commonAnnotations":{},"externalURL":"http://alertmanager:9093","version":"4",
      "groupKey":"{}/{alertname=\"EbbPoolBelowExpectedCapacity\"}:{alertname=\"EbbPoolBelowExpectedCapacity\", ebb_pool=\"web\"}",
      "truncatedAlerts":0}"#;

    #[test]
    fn a_notification_gives_its_group_and_labels_to_the_environment() {
        let n = parse(SENT.as_bytes()).expect("Alertmanager's notification");
        assert_eq!((n.status.as_str(), n.alerts, n.firing), ("firing", 1, 1));
        assert!(n.group_key.ends_with("ebb_pool=\"web\"}"), "{}", n.group_key);
        let env = n.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("EBB_ALERT"), Some("EbbPoolBelowExpectedCapacity"));
        assert_eq!(get("EBB_POOL"), Some("web"));
        assert_eq!(get("EBB_LABEL_EBB_POOL"), Some("web"));
        assert_eq!(get("EBB_LABEL_SEVERITY"), Some("page"));
        assert_eq!(get("EBB_RECEIVER"), Some("recover-pool"));
        assert_eq!(n.describe(), "alertname=EbbPoolBelowExpectedCapacity, ebb_pool=web, severity=page");
        assert_eq!(n.body, SENT.as_bytes());
    }

    #[test]
    fn what_is_not_a_version_4_notification_is_refused_with_the_field() {
        let edit = |from: &str, to: &str| {
            assert!(SENT.contains(from), "{from}");
            parse(SENT.replacen(from, to, 1).as_bytes()).expect_err("refused")
        };
        assert!(parse(b"{").expect_err("refused").starts_with("not JSON"));
        assert_eq!(parse(b"[]").expect_err("refused"), "expected a JSON object (Alertmanager's webhook notification)");
        assert_eq!(
            edit(r#""version":"4""#, r#""version":"3""#),
            "version: expected \"4\" (Alertmanager's webhook payload), got \"3\""
        );
        assert_eq!(edit(r#""groupKey":"#, r#""groupKeys":"#), "groupKey: missing");
        assert_eq!(
            edit(r#""status":"firing","alerts""#, r#""status":"bad","alerts""#),
            "status: expected \"firing\" or \"resolved\", got \"bad\""
        );
        assert_eq!(
            edit(
                r#""ebb_pool":"web","severity":"page"},
      "annotations""#,
                r#""ebb_pool":7},"annotations""#
            ),
            "alerts[0].labels.ebb_pool: expected a string"
        );
        assert_eq!(edit(r#""alerts":[{"#, r#""alerts":[1,{"#), "alerts[0]: expected an object");
        assert_eq!(
            edit(
                r#""commonLabels":{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"web","severity":"page"}"#,
                r#""commonLabels":"x""#
            ),
            "commonLabels: expected an object of labels"
        );
    }
}
