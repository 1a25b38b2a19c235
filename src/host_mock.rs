//! A mock Envoy for unit tests: any number of workers over one shared-data map and one
//! clock, the calls they start recorded for the test to answer (or fail, or let time
//! out), the replies they send and the headers they set kept for assertions. Each
//! worker gets a [`MockHost`] of its own; a request's state lives in its host's
//! current stream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::host::{Call, Headers, Host, SharedData};

/// A call a worker started and nobody answered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCall {
    pub token: u32,
    pub worker: usize,
    pub cluster: String,
    pub path: String,
    pub authority: String,
}

/// A reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// An answer to a call: its `:status` (none: the call failed or timed out) and body.
type Answer = (Option<Vec<u8>>, Vec<u8>);

#[derive(Default)]
struct World {
    shared: HashMap<String, (Vec<u8>, u32)>,
    now_ms: i64,
    next_token: u32,
    calls: Vec<SentCall>,
    /// Refuse every dispatch (a cluster Envoy does not know).
    refuse_dispatch: bool,
    counters: Vec<(String, u64)>,
}

/// The Envoy every mock worker shares.
#[derive(Clone, Default)]
pub struct MockEnvoy(Rc<RefCell<World>>);

impl MockEnvoy {
    pub fn new(now_secs: i64) -> Self {
        let envoy = MockEnvoy::default();
        envoy.0.borrow_mut().now_ms = now_secs * 1000;
        envoy
    }

    /// The host as worker `worker` sees it.
    pub fn host(&self, worker: usize) -> MockHost {
        MockHost {
            envoy: self.clone(),
            worker,
            answer: RefCell::new(None),
            stream: RefCell::new(Stream::default()),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.0.borrow().now_ms
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.borrow_mut().now_ms += ms;
    }

    /// The calls started and not yet taken, oldest first.
    pub fn take_calls(&self) -> Vec<SentCall> {
        std::mem::take(&mut self.0.borrow_mut().calls)
    }

    pub fn refuse_dispatch(&self, refuse: bool) {
        self.0.borrow_mut().refuse_dispatch = refuse;
    }

    /// A counter's value, by name (0 if it was never added to).
    pub fn counter(&self, name: &str) -> u64 {
        self.0
            .borrow()
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// The current request of a worker, as the host sees it.
#[derive(Default)]
pub struct Stream {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub reply: Option<Reply>,
    pub resumed: bool,
}

pub struct MockHost {
    envoy: MockEnvoy,
    worker: usize,
    /// The answer being handed over to `on_answer`.
    answer: RefCell<Option<Answer>>,
    pub stream: RefCell<Stream>,
}

impl MockHost {
    /// Starts a new request with these headers (and body).
    pub fn begin(&self, headers: &[(&str, &str)], body: &[u8]) {
        *self.stream.borrow_mut() = Stream {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            ..Stream::default()
        };
    }

    /// Hands over an answer: `Some(status)` with a body, or `None` (the call failed or
    /// timed out). Returns the body size to pass to the callback.
    pub fn answering(&self, status: Option<u32>, body: &str) -> usize {
        *self.answer.borrow_mut() = Some((
            status.map(|s| s.to_string().into_bytes()),
            body.as_bytes().to_vec(),
        ));
        body.len()
    }

    pub fn reply(&self) -> Option<Reply> {
        self.stream.borrow().reply.clone()
    }

    pub fn resumed(&self) -> bool {
        self.stream.borrow().resumed
    }

    /// A request header's value as the upstream would get it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.stream
            .borrow()
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

impl SharedData for MockHost {
    fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        let world = self.envoy.0.borrow();
        let (value, cas) = world.shared.get(key)?;
        Some((value.clone(), Some(*cas)))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut world = self.envoy.0.borrow_mut();
        let current = world.shared.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        world
            .shared
            .insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
        true
    }
}

impl Host for MockHost {
    fn now(&self) -> i64 {
        self.envoy.0.borrow().now_ms.div_euclid(1000)
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        let mut world = self.envoy.0.borrow_mut();
        if world.refuse_dispatch {
            return Err("BadArgument".into());
        }
        world.next_token += 1;
        let token = world.next_token;
        world.calls.push(SentCall {
            token,
            worker: self.worker,
            cluster: call.cluster.to_string(),
            path: call.path.to_string(),
            authority: call.authority.to_string(),
        });
        Ok(token)
    }

    fn answer_status(&self) -> Option<Vec<u8>> {
        self.answer
            .borrow()
            .as_ref()
            .and_then(|(status, _)| status.clone())
    }

    fn answer_body(&self, size: usize) -> Option<Vec<u8>> {
        let answer = self.answer.borrow();
        let (_, body) = answer.as_ref()?;
        body.get(..size).map(<[u8]>::to_vec)
    }

    fn request_headers(&self) -> Option<Headers> {
        Some(self.stream.borrow().headers.clone())
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.stream.borrow().body.get(..size).map(<[u8]>::to_vec)
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) {
        let mut stream = self.stream.borrow_mut();
        stream.headers.retain(|(k, _)| k != name);
        if let Some(value) = value {
            stream.headers.push((name.to_string(), value.to_vec()));
        }
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
        self.stream.borrow_mut().reply = Some(Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        true
    }

    fn resume_request(&self) {
        self.stream.borrow_mut().resumed = true;
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut world = self.envoy.0.borrow_mut();
        if let Some(i) = world.counters.iter().position(|(n, _)| n == name) {
            return u32::try_from(i).ok();
        }
        world.counters.push((name.to_string(), 0));
        u32::try_from(world.counters.len() - 1).ok()
    }

    fn add_to_counter(&self, id: u32, n: u64) -> bool {
        let mut world = self.envoy.0.borrow_mut();
        match world.counters.get_mut(id as usize) {
            Some((_, value)) => {
                *value += n;
                true
            }
            None => false,
        }
    }
}
