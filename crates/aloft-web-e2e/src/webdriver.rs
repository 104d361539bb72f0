//! A small W3C WebDriver client (the commands these tests use), blocking,
//! over HTTP/1.1 to a local chromedriver.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key W3C WebDriver names element references with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys for [`Element::send_keys`] (WebDriver's code points).
pub mod keys {
    /// Enter.
    pub const ENTER: &str = "\u{E007}";
    /// Escape.
    pub const ESCAPE: &str = "\u{E00C}";
    /// Tab.
    pub const TAB: &str = "\u{E004}";
    /// Shift (held for the rest of one `send_keys`).
    pub const SHIFT: &str = "\u{E008}";
}

/// A failed WebDriver command.
#[derive(Debug, thiserror::Error)]
pub enum WebDriverError {
    /// The HTTP exchange with chromedriver failed.
    #[error("{command}: HTTP to chromedriver failed")]
    Http {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: ureq::Error,
    },
    /// chromedriver answered with a WebDriver error.
    #[error("{command}: {error}: {message}")]
    Command {
        /// The command.
        command: String,
        /// WebDriver's error code, e.g. "no such element".
        error: String,
        /// Its message.
        message: String,
    },
    /// An answer that is not what the protocol says.
    #[error("{command}: unexpected answer {answer}")]
    Protocol {
        /// The command.
        command: String,
        /// What came back.
        answer: String,
    },
    /// A condition did not hold in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
}

/// A browser session.
pub struct Session {
    agent: ureq::Agent,
    base: String,
}

/// An element of the page, as the session knows it.
pub struct Element<'a> {
    session: &'a Session,
    id: String,
}

/// One line of the browser's console log.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// SEVERE, WARNING, INFO, ...
    pub level: String,
    /// The text.
    pub message: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn answer(
    command: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Value, WebDriverError> {
    let mut response = response.map_err(|source| WebDriverError::Http {
        command: command.to_owned(),
        source,
    })?;
    let body: Value = response
        .body_mut()
        .read_json()
        .map_err(|source| WebDriverError::Http {
            command: command.to_owned(),
            source,
        })?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(WebDriverError::Command {
            command: command.to_owned(),
            error: error.to_owned(),
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(value)
}

impl Session {
    /// Opens a session on the chromedriver at `driver_url` with these
    /// capabilities (`alwaysMatch`).
    pub fn new(driver_url: &str, capabilities: Value) -> Result<Self, WebDriverError> {
        let agent = agent();
        let value = answer(
            "new session",
            agent
                .post(&format!("{driver_url}/session"))
                .send_json(json!({ "capabilities": { "alwaysMatch": capabilities } })),
        )?;
        let id = value
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| WebDriverError::Protocol {
                command: "new session".into(),
                answer: value.to_string(),
            })?;
        Ok(Self {
            base: format!("{driver_url}/session/{id}"),
            agent,
        })
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, WebDriverError> {
        answer(
            path,
            self.agent
                .post(&format!("{}{path}", self.base))
                .send_json(body),
        )
    }

    fn get(&self, path: &str) -> Result<Value, WebDriverError> {
        answer(path, self.agent.get(&format!("{}{path}", self.base)).call())
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<(), WebDriverError> {
        self.post("/url", json!({ "url": url })).map(|_| ())
    }

    /// Reloads the page.
    pub fn refresh(&self) -> Result<(), WebDriverError> {
        self.post("/refresh", json!({})).map(|_| ())
    }

    /// The page's URL.
    pub fn url(&self) -> Result<String, WebDriverError> {
        Ok(self.get("/url")?.as_str().unwrap_or_default().to_owned())
    }

    fn element(&self, value: &Value, command: &str) -> Result<Element<'_>, WebDriverError> {
        let id = value
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| WebDriverError::Protocol {
                command: command.to_owned(),
                answer: value.to_string(),
            })?;
        Ok(Element {
            session: self,
            id: id.to_owned(),
        })
    }

    /// The first element matching the CSS selector.
    pub fn find(&self, css: &str) -> Result<Element<'_>, WebDriverError> {
        let value = self.post("/element", json!({ "using": "css selector", "value": css }))?;
        self.element(&value, &format!("find {css}"))
    }

    /// Every element matching the CSS selector.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, WebDriverError> {
        let value = self.post(
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )?;
        value
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|v| self.element(v, &format!("find all {css}")))
            .collect()
    }

    /// Waits until an element matches `css`, and returns it.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>, WebDriverError> {
        let until = Instant::now() + timeout;
        loop {
            match self.find(css) {
                Ok(e) => return Ok(e),
                Err(WebDriverError::Command { error, .. }) if error == "no such element" => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= until {
                return Err(WebDriverError::Timeout {
                    what: format!("an element matching {css}"),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The focused element.
    pub fn active(&self) -> Result<Element<'_>, WebDriverError> {
        let value = self.get("/element/active")?;
        self.element(&value, "active element")
    }

    /// Runs `script` as a function body with `args`; its return value.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, WebDriverError> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Runs `script`, which calls its last argument with the result.
    pub fn execute_async(&self, script: &str, args: Value) -> Result<Value, WebDriverError> {
        self.post("/execute/async", json!({ "script": script, "args": args }))
    }

    /// The page as PNG bytes.
    pub fn screenshot(&self) -> Result<Vec<u8>, WebDriverError> {
        let value = self.get("/screenshot")?;
        let text = value.as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| WebDriverError::Protocol {
                command: "screenshot".into(),
                answer: e.to_string(),
            })
    }

    /// Resizes the window (outer size, in CSS pixels).
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<(), WebDriverError> {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .map(|_| ())
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver
    /// (`goog/cdp/execute`); its result.
    pub fn cdp(&self, cmd: &str, params: Value) -> Result<Value, WebDriverError> {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
    }

    /// Emulates a viewport of `width` x `height` CSS pixels (a phone's,
    /// narrower than the smallest window a desktop browser allows), or
    /// ends the emulation with `None`.
    pub fn emulate_viewport(&self, size: Option<(u32, u32)>) -> Result<(), WebDriverError> {
        match size {
            Some((width, height)) => self.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": true }),
            ),
            None => self.cdp("Emulation.clearDeviceMetricsOverride", json!({})),
        }
        .map(|_| ())
    }

    /// The console messages since the last call (chromedriver's log
    /// endpoint; the session needs `goog:loggingPrefs`).
    pub fn browser_log(&self) -> Result<Vec<LogEntry>, WebDriverError> {
        let value = self.post("/se/log", json!({ "type": "browser" }))?;
        Ok(value
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// Ends the session (closes the browser).
    pub fn quit(&self) -> Result<(), WebDriverError> {
        answer("quit", self.agent.delete(&self.base).call()).map(|_| ())
    }
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// Clicks it.
    pub fn click(&self) -> Result<(), WebDriverError> {
        self.session
            .post(&self.path("/click"), json!({}))
            .map(|_| ())
    }

    /// Types `text` into it (see [`keys`]).
    pub fn send_keys(&self, text: &str) -> Result<(), WebDriverError> {
        self.session
            .post(&self.path("/value"), json!({ "text": text }))
            .map(|_| ())
    }

    /// Empties a text field.
    pub fn clear(&self) -> Result<(), WebDriverError> {
        self.session
            .post(&self.path("/clear"), json!({}))
            .map(|_| ())
    }

    /// Its rendered text.
    pub fn text(&self) -> Result<String, WebDriverError> {
        Ok(self
            .session
            .get(&self.path("/text"))?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// An attribute (`None` when absent).
    pub fn attribute(&self, name: &str) -> Result<Option<String>, WebDriverError> {
        Ok(self
            .session
            .get(&self.path(&format!("/attribute/{name}")))?
            .as_str()
            .map(str::to_owned))
    }

    /// Whether it is enabled.
    pub fn enabled(&self) -> Result<bool, WebDriverError> {
        Ok(self
            .session
            .get(&self.path("/enabled"))?
            .as_bool()
            .unwrap_or(false))
    }

    /// Elements inside it matching `css`.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, WebDriverError> {
        let value = self.session.post(
            &self.path("/elements"),
            json!({ "using": "css selector", "value": css }),
        )?;
        value
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|v| self.session.element(v, &format!("find all {css}")))
            .collect()
    }
}
