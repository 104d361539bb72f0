//! Device selectors: `""` selects every device; otherwise `;`-separated
//! clauses `key=v1,v2` that must all match, with keys `id`, `product`,
//! `hardware`, `region`, `tag` and `test_device` (`true`/`false`).
//! Issue 5's rollout engine may grow this language.

use crate::store::DeviceRecord;

/// A parsed selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    clauses: Vec<(Key, Vec<String>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Id,
    Product,
    Hardware,
    Region,
    Tag,
    TestDevice,
}

/// A selector that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid selector {0:?}: expected \"\" or clauses like id=a,b;region=eu (keys: id, product, hardware, region, tag, test_device)"
)]
pub struct SelectorError(String);

impl Selector {
    /// Parses a selector expression.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut clauses = Vec::new();
        for clause in s.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let (k, v) = clause
                .split_once('=')
                .ok_or_else(|| SelectorError(s.to_owned()))?;
            let key = match k.trim() {
                "id" => Key::Id,
                "product" => Key::Product,
                "hardware" => Key::Hardware,
                "region" => Key::Region,
                "tag" => Key::Tag,
                "test_device" => Key::TestDevice,
                _ => return Err(SelectorError(s.to_owned())),
            };
            let values: Vec<String> = v
                .split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect();
            if values.is_empty() {
                return Err(SelectorError(s.to_owned()));
            }
            clauses.push((key, values));
        }
        Ok(Self { clauses })
    }

    /// Whether `device` matches every clause.
    pub fn matches(&self, device: &DeviceRecord) -> bool {
        let attrs = device.attributes.clone().unwrap_or_default();
        self.clauses.iter().all(|(key, values)| {
            let has = |x: &str| values.iter().any(|v| v == x);
            match key {
                Key::Id => has(&device.device_id),
                Key::Product => has(&attrs.product),
                Key::Hardware => has(&attrs.hardware),
                Key::Region => has(&attrs.region),
                Key::Tag => attrs.tags.iter().any(|t| has(t)),
                Key::TestDevice => has(if attrs.test_device { "true" } else { "false" }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_protocol::pb;

    #[test]
    fn parses_and_matches() {
        let d = DeviceRecord {
            device_id: "d1".into(),
            attributes: Some(pb::DeviceAttributes {
                region: "eu".into(),
                tags: vec!["lab".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(Selector::parse("").unwrap().matches(&d));
        assert!(Selector::parse("id=d0,d1").unwrap().matches(&d));
        assert!(!Selector::parse("id=d2").unwrap().matches(&d));
        assert!(Selector::parse("region=eu;tag=lab").unwrap().matches(&d));
        assert!(!Selector::parse("region=eu;tag=field").unwrap().matches(&d));
        assert!(Selector::parse("colour=red").is_err());
        assert!(Selector::parse("id=").is_err());
    }
}
