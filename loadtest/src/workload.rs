//! OpenMessaging Benchmark workload files: the flat `key: value` YAML they are written in,
//! parsed by hand into a [`Workload`].
//!
//! The files are a single mapping of scalars, so a full YAML parser would be a heavy dependency
//! for nothing. Anything outside that subset (nesting, lists, anchors) is refused with its line
//! number rather than misread. Unknown keys are errors too, so a typo does not silently run a
//! different benchmark.

use std::fmt;

/// What a workload asks for. Field names follow the OMB keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub message_size: usize,
    pub subscriptions_per_topic: u32,
    pub consumer_per_subscription: u32,
    pub producers_per_topic: u32,
    /// Records per second over all producers; <= 0 means as fast as possible.
    pub producer_rate: f64,
    pub test_duration_minutes: f64,
    pub warmup_duration_minutes: f64,
}

/// A workload file that cannot be run, with the 1-based line where that is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line: Some(line),
        message: message.into(),
    }
}

/// A scalar as written: quoted strings stay strings, everything else is interpreted per key.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Quoted(String),
    Plain(String),
}

impl Scalar {
    fn text(&self) -> &str {
        match self {
            Scalar::Quoted(s) | Scalar::Plain(s) => s,
        }
    }
}

/// Splits one line into `(key, value)`; `None` for blank and comment-only lines.
fn parse_line(lineno: usize, raw: &str) -> Result<Option<(String, Scalar)>, ParseError> {
    let line = raw.trim_end();
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" || trimmed == "..." {
        return Ok(None);
    }
    if line.len() != trimmed.len() {
        return Err(err(
            lineno,
            "nested values are not supported (indented line)",
        ));
    }
    if trimmed.starts_with('-') {
        return Err(err(lineno, "lists are not supported"));
    }
    let Some((key, rest)) = trimmed.split_once(':') else {
        return Err(err(lineno, "expected `key: value`"));
    };
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(err(lineno, format!("bad key {key:?}")));
    }
    let rest = rest.trim_start();
    let value = if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let body = &rest[1..];
        let Some(end) = body.find(q) else {
            return Err(err(lineno, "unterminated quoted string"));
        };
        let tail = body[end + 1..].trim();
        if !(tail.is_empty() || tail.starts_with('#')) {
            return Err(err(lineno, "text after a quoted string"));
        }
        Scalar::Quoted(body[..end].to_string())
    } else {
        // A comment starts at a `#` preceded by whitespace (YAML's rule).
        let mut end = rest.len();
        let bytes = rest.as_bytes();
        for i in 0..bytes.len() {
            if bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
                end = i;
                break;
            }
        }
        let v = rest[..end].trim();
        if v.is_empty() {
            return Err(err(
                lineno,
                format!("`{key}` has no value (nested maps are not supported)"),
            ));
        }
        if v.starts_with(['[', '{', '&', '*', '|', '>', '!']) {
            return Err(err(
                lineno,
                format!("`{key}`: only plain scalars are supported"),
            ));
        }
        Scalar::Plain(v.to_string())
    };
    Ok(Some((key.to_string(), value)))
}

fn number(lineno: usize, key: &str, v: &Scalar) -> Result<f64, ParseError> {
    let t = v.text().replace('_', "");
    t.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| {
            err(
                lineno,
                format!("`{key}` must be a number, got {:?}", v.text()),
            )
        })
}

fn count(lineno: usize, key: &str, v: &Scalar) -> Result<u32, ParseError> {
    let x = number(lineno, key, v)?;
    if x < 0.0 || x.fract() != 0.0 || x > u32::MAX as f64 {
        return Err(err(
            lineno,
            format!("`{key}` must be a whole number >= 0, got {}", v.text()),
        ));
    }
    Ok(x as u32)
}

/// Parses a workload file's text.
pub fn parse(text: &str) -> Result<Workload, ParseError> {
    let mut w = Workload {
        name: String::new(),
        topics: 0,
        partitions_per_topic: 0,
        message_size: 0,
        subscriptions_per_topic: 1,
        consumer_per_subscription: 1,
        producers_per_topic: 1,
        producer_rate: 0.0,
        test_duration_minutes: 0.0,
        warmup_duration_minutes: 0.0,
    };
    let mut seen: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let Some((key, value)) = parse_line(lineno, raw)? else {
            continue;
        };
        if seen.contains(&key) {
            return Err(err(lineno, format!("`{key}` given twice")));
        }
        match key.as_str() {
            "name" => w.name = value.text().to_string(),
            "topics" => w.topics = count(lineno, &key, &value)?,
            "partitionsPerTopic" => w.partitions_per_topic = count(lineno, &key, &value)?,
            "messageSize" => w.message_size = count(lineno, &key, &value)? as usize,
            "subscriptionsPerTopic" => w.subscriptions_per_topic = count(lineno, &key, &value)?,
            "consumerPerSubscription" => w.consumer_per_subscription = count(lineno, &key, &value)?,
            "producersPerTopic" => w.producers_per_topic = count(lineno, &key, &value)?,
            "producerRate" => w.producer_rate = number(lineno, &key, &value)?,
            "testDurationMinutes" => w.test_duration_minutes = number(lineno, &key, &value)?,
            "warmupDurationMinutes" => w.warmup_duration_minutes = number(lineno, &key, &value)?,
            "consumerBacklogSizeGB" => {
                if number(lineno, &key, &value)? != 0.0 {
                    return Err(err(lineno, "consumer backlogs are not supported; use 0"));
                }
            }
            "keyDistributor" => {
                if value.text() != "NO_KEY" {
                    return Err(err(
                        lineno,
                        format!(
                            "keyDistributor {:?} is not supported; records have no key (NO_KEY)",
                            value.text()
                        ),
                    ));
                }
            }
            // Payload contents: this tool always sends random printable bytes of messageSize.
            "payloadFile"
            | "useRandomizedPayloads"
            | "randomBytesRatio"
            | "randomizedPayloadPoolSize" => {}
            _ => return Err(err(lineno, format!("unknown workload key `{key}`"))),
        }
        seen.push(key);
    }
    for required in [
        "topics",
        "partitionsPerTopic",
        "messageSize",
        "producerRate",
        "testDurationMinutes",
    ] {
        if !seen.iter().any(|k| k == required) {
            return Err(ParseError {
                line: None,
                message: format!("missing `{required}`"),
            });
        }
    }
    let positive = [
        ("topics", w.topics),
        ("partitionsPerTopic", w.partitions_per_topic),
        ("producersPerTopic", w.producers_per_topic),
    ];
    for (key, v) in positive {
        if v == 0 {
            return Err(ParseError {
                line: None,
                message: format!("`{key}` must be at least 1"),
            });
        }
    }
    if w.test_duration_minutes <= 0.0 || w.warmup_duration_minutes < 0.0 {
        return Err(ParseError {
            line: None,
            message: "testDurationMinutes must be > 0 and warmupDurationMinutes >= 0".into(),
        });
    }
    Ok(w)
}

impl Workload {
    /// Consumers that read every topic in full: one group of them per subscription.
    pub fn consumers_per_topic(&self) -> u32 {
        self.subscriptions_per_topic * self.consumer_per_subscription
    }

    /// Rate of one producer, records/s; `None` when unthrottled.
    pub fn rate_per_producer(&self) -> Option<f64> {
        (self.producer_rate > 0.0)
            .then(|| self.producer_rate / f64::from(self.topics * self.producers_per_topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of OMB's workloads/1-topic-16-partitions-1kb.yaml.
    const OMB: &str = r#"
#
# Licensed under the Apache License...
#

name: 1 topic / 16 partitions / 1Kb

topics: 1
partitionsPerTopic: 16
keyDistributor: "NO_KEY"
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"#;

    #[test]
    fn parses_an_omb_workload() {
        let w = parse(OMB).unwrap();
        assert_eq!(
            w,
            Workload {
                name: "1 topic / 16 partitions / 1Kb".into(),
                topics: 1,
                partitions_per_topic: 16,
                message_size: 1024,
                subscriptions_per_topic: 1,
                consumer_per_subscription: 1,
                producers_per_topic: 1,
                producer_rate: 50_000.0,
                test_duration_minutes: 15.0,
                warmup_duration_minutes: 0.0,
            }
        );
        assert_eq!(w.rate_per_producer(), Some(50_000.0));
    }

    #[test]
    fn fractional_minutes_comments_and_quotes() {
        let w = parse(
            "name: 'short # run'  # a comment\ntopics: 2\npartitionsPerTopic: 3 # three\n\
             messageSize: 100\nproducersPerTopic: 2\nsubscriptionsPerTopic: 2\n\
             consumerPerSubscription: 3\nproducerRate: 1_000\ntestDurationMinutes: 0.25\n\
             warmupDurationMinutes: 0.1\n",
        )
        .unwrap();
        assert_eq!(w.name, "short # run");
        assert_eq!(w.partitions_per_topic, 3);
        assert_eq!(w.test_duration_minutes, 0.25);
        assert_eq!(w.warmup_duration_minutes, 0.1);
        assert_eq!(w.consumers_per_topic(), 6);
        assert_eq!(w.rate_per_producer(), Some(250.0));
    }

    #[test]
    fn zero_rate_is_unthrottled() {
        let w = parse("topics: 1\npartitionsPerTopic: 1\nmessageSize: 10\nproducerRate: 0\ntestDurationMinutes: 1\n")
            .unwrap();
        assert_eq!(w.rate_per_producer(), None);
    }

    #[test]
    fn refuses_what_it_would_misread() {
        let base = "topics: 1\npartitionsPerTopic: 1\nmessageSize: 10\nproducerRate: 5\n";
        let cases = [
            (format!("{base}testDurationMinutes: 1\nfoo: 1\n"), "line 6: unknown workload key `foo`"),
            (format!("{base}testDurationMinutes:\n  nested: 1\n"), "line 5: `testDurationMinutes` has no value"),
            (format!("{base}testDurationMinutes: 1\n- a\n"), "line 6: lists are not supported"),
            (format!("{base}testDurationMinutes: [1]\n"), "line 5: `testDurationMinutes`: only plain scalars"),
            (format!("{base}testDurationMinutes: soon\n"), "line 5: `testDurationMinutes` must be a number"),
            (format!("{base}testDurationMinutes: 1\ntopics: 2\n"), "line 6: `topics` given twice"),
            (format!("{base}testDurationMinutes: 1\nkeyDistributor: RANDOM_NANO\n"), "line 6: keyDistributor"),
            (format!("{base}testDurationMinutes: 1\nconsumerBacklogSizeGB: 10\n"), "line 6: consumer backlogs"),
            (format!("{base}testDurationMinutes: 1\nname: \"open\n"), "line 6: unterminated"),
            (base.to_string(), "missing `testDurationMinutes`"),
            (format!("{base}testDurationMinutes: 0\n"), "testDurationMinutes must be > 0"),
            (
                "topics: 1\npartitionsPerTopic: 1.5\nmessageSize: 10\nproducerRate: 5\ntestDurationMinutes: 1\n".into(),
                "line 2: `partitionsPerTopic` must be a whole number",
            ),
            (
                "topics: 0\npartitionsPerTopic: 1\nmessageSize: 10\nproducerRate: 5\ntestDurationMinutes: 1\n".into(),
                "`topics` must be at least 1",
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text).unwrap_err().to_string();
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }
}
