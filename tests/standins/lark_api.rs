//! A tiny threaded HTTP/1.1 stand-in of the Lark Open API (spec §9) for tests, plus a payment
//! platform endpoint that the payout plugin can forward to. Loopback only (`127.0.0.1:0`), std +
//! `serde_json` only, self-contained: include it with `#[path = ".../tests/standins/lark_api.rs"]
//! mod lark_api;`.
//!
//! Paths: `POST /open-apis/auth/v3/tenant_access_token/internal` (checks app id and secret, issues
//! `t-standin-N`), `POST /open-apis/hire/v1/referral_account/{id}/withdraw` (checks the bearer
//! token; withdraws the whole balance of the requested types; idempotent on `external_order_id`
//! like Lark: a repeated id returns the original withdrawal and is counted once),
//! `POST /open-apis/hire/v1/referral_account/reconciliation` (compares submitted totals with its
//! own withdrawals in the range; answers only mismatches) and `POST /payments/withdrawals` (the
//! payment platform: answers 200 and records the request). Every request is recorded; every
//! answer carries a fresh `X-Tt-Logid` (`log-N`, N = request number from 1) and
//! `Connection: close`. Amounts are written into JSON as exact decimal text (`0.30`). App id
//! `cli_test`, secret `secret_test`. Fault knobs: the fields of [`Faults`], see [`LarkApi::faults`].
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
pub const RECONCILIATION_PATH: &str = "/open-apis/hire/v1/referral_account/reconciliation";
pub const PAYMENTS_PATH: &str = "/payments/withdrawals";
const ACCOUNT_PREFIX: &str = "/open-apis/hire/v1/referral_account/";
/// The code Lark uses for an invalid tenant access token.
pub const INVALID_TOKEN_CODE: i64 = 99_991_663;

/// One recorded HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The `X-Tt-Logid` given to the answer.
    pub log_id: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn is_withdraw(&self) -> bool {
        self.path.starts_with(ACCOUNT_PREFIX) && self.path.ends_with("/withdraw")
    }
}

/// Points and cash (hundredths per currency): a balance or an amount withdrawn.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assets {
    pub points: u64,
    pub cash: BTreeMap<String, i64>,
}

/// One withdrawal performed by the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub external_order_id: String,
    pub account_id: String,
    pub trans_time: u64,
    pub assets: Assets,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    balances: HashMap<String, Assets>,
    withdrawals: Vec<Withdrawal>,
    tokens: Vec<String>,
    tokens_issued: u64,
    token_expire: u64,
    next_trans_time: Option<u64>,
    faults: Faults,
}

/// Fault knobs (all off by default).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Fail the next N withdraws with HTTP 500, before withdrawing anything.
    pub fail_withdraws: u32,
    /// Withdraw, then answer the next withdraw only after this delay (a slow Lark).
    pub delay_next_withdraw: Option<Duration>,
    /// Answer every withdraw with HTTP 400 and this `(code, msg)` while set.
    pub business_error: Option<(i64, String)>,
    /// While set, a new withdraw (an `external_order_id` not seen before) that would take
    /// nothing (the balance of the types asked is zero) is answered with HTTP 400 and this
    /// `(code, msg)` instead of a withdrawal of nothing.
    pub refuse_empty: Option<(i64, String)>,
    /// Answer the next withdraw with code 99991663 and revoke every issued token.
    pub invalid_token_once: bool,
    /// Answer the next N withdraws with HTTP 429, code 99991400 and `Retry-After`.
    pub rate_limit_withdraws: u32,
    /// The `Retry-After` seconds of those 429s.
    pub retry_after_s: u64,
    /// Fail the next N payment-platform requests with HTTP 500.
    pub fail_payments: u32,
}

/// The running stand-in; stops when dropped.
pub struct LarkApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LarkApi {
    pub fn start() -> LarkApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            token_expire: 7200,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || serve(stream, &st));
                }
            }
        });
        LarkApi {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (use as `base_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The payment platform endpoint (use as `forward_url`).
    pub fn payments_url(&self) -> String {
        format!("{}{PAYMENTS_PATH}", self.base_url())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets an account's balance; cash as `(currency, "decimal")`.
    pub fn set_balance(&self, account_id: &str, points: u64, cash: &[(&str, &str)]) {
        let cash = cash
            .iter()
            .map(|(c, a)| ((*c).to_owned(), minor(a).expect("decimal amount")))
            .collect();
        self.lock()
            .balances
            .insert(account_id.to_owned(), Assets { points, cash });
    }

    pub fn balance(&self, account_id: &str) -> Assets {
        let s = self.lock();
        s.balances.get(account_id).cloned().unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests_where(|r| r.path == path)
    }

    pub fn requests_where(&self, keep: impl Fn(&Request) -> bool) -> Vec<Request> {
        self.lock()
            .requests
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    pub fn token_calls(&self) -> usize {
        self.requests_to(TOKEN_PATH).len()
    }

    /// Every withdraw request received, in order (including failed and repeated ones).
    pub fn withdraw_calls(&self) -> Vec<Request> {
        self.requests_where(Request::is_withdraw)
    }

    /// Withdrawals performed (one per distinct `external_order_id`).
    pub fn withdrawals(&self) -> Vec<Withdrawal> {
        self.lock().withdrawals.clone()
    }

    /// Requests received by the payment platform endpoint.
    pub fn payments(&self) -> Vec<Request> {
        self.requests_to(PAYMENTS_PATH)
    }

    /// Records a withdrawal the ledger knows nothing about (for reconciliation tests).
    pub fn inject_withdrawal(&self, w: Withdrawal) {
        self.lock().withdrawals.push(w);
    }

    /// Fixes the next `trans_time` (later withdrawals get +1 ms each); default: the clock.
    pub fn set_trans_time(&self, ms: u64) {
        self.lock().next_trans_time = Some(ms);
    }

    /// `expire` (seconds) of tokens issued from now on.
    pub fn set_token_expire(&self, seconds: u64) {
        self.lock().token_expire = seconds;
    }

    /// Changes the fault knobs: `api.faults(|f| f.fail_withdraws = 2)`.
    pub fn faults(&self, set: impl FnOnce(&mut Faults)) {
        set(&mut self.lock().faults);
    }
}

impl Drop for LarkApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hundredths from a plain decimal with at most two places.
fn minor(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || frac.len() > 2
        || !format!("{int}{frac}").bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<2}");
    Some(int.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

fn decimal(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{"point_bonus":N,"cash_bonus":[{"currency_type":"CNY","amount":0.30}]}`, exact amounts.
fn reward_json(a: &Assets) -> String {
    let cash: Vec<String> = a
        .cash
        .iter()
        .map(|(c, m)| {
            format!(
                r#"{{"currency_type":{},"amount":{}}}"#,
                quote(c),
                decimal(*m)
            )
        })
        .collect();
    let points = a.points;
    format!(
        r#"{{"point_bonus":{points},"cash_bonus":[{}]}}"#,
        cash.join(",")
    )
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn envelope(code: i64, msg: &str) -> String {
    serde_json::json!({"code": code, "msg": msg}).to_string()
}

struct Answer {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
    delay: Option<Duration>,
}

fn answer(status: u16, body: String) -> Answer {
    Answer {
        status,
        body,
        headers: Vec::new(),
        delay: None,
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(mut req) = read_request(&stream) else {
        return;
    };
    let reply = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        req.log_id = format!("log-{}", s.requests.len() + 1);
        s.requests.push(req.clone());
        route(&mut s, &req)
    };
    if let Some(d) = reply.delay {
        std::thread::sleep(d);
    }
    let mut head = format!(
        "HTTP/1.1 {} Stand-in\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nX-Tt-Logid: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len(),
        req.log_id
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        log_id: String::new(),
    })
}

fn route(s: &mut State, req: &Request) -> Answer {
    if req.method != "POST" {
        return answer(404, envelope(404, "not found"));
    }
    if req.path == TOKEN_PATH {
        return token(s, req);
    }
    if req.path == PAYMENTS_PATH {
        if s.faults.fail_payments > 0 {
            s.faults.fail_payments -= 1;
            return answer(500, r#"{"error":"stand-in: injected failure"}"#.into());
        }
        return answer(200, r#"{"ok":true}"#.into());
    }
    let authorised = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| s.tokens.iter().any(|k| k == t));
    let invalid = || {
        answer(400, envelope(INVALID_TOKEN_CODE, "Invalid access token for authorization. Please make a request with token attached."))
    };
    if req.path == RECONCILIATION_PATH {
        return if authorised {
            reconcile(s, req)
        } else {
            invalid()
        };
    }
    let account = req
        .path
        .strip_prefix(ACCOUNT_PREFIX)
        .and_then(|p| p.strip_suffix("/withdraw"))
        .filter(|a| !a.is_empty() && !a.contains('/'));
    let Some(account) = account else {
        return answer(404, envelope(404, "not found"));
    };
    if s.faults.invalid_token_once {
        s.faults.invalid_token_once = false;
        s.tokens.clear();
        return invalid();
    }
    if !authorised {
        return invalid();
    }
    if s.faults.fail_withdraws > 0 {
        s.faults.fail_withdraws -= 1;
        return answer(500, envelope(-1, "stand-in: injected internal error"));
    }
    if s.faults.rate_limit_withdraws > 0 {
        s.faults.rate_limit_withdraws -= 1;
        let mut a = answer(429, envelope(99_991_400, "request trigger frequency limit"));
        a.headers
            .push(("Retry-After".into(), s.faults.retry_after_s.to_string()));
        return a;
    }
    if let Some((code, msg)) = &s.faults.business_error {
        return answer(400, envelope(*code, msg));
    }
    let mut a = withdraw(s, account, req);
    a.delay = s.faults.delay_next_withdraw.take();
    a
}

fn token(s: &mut State, req: &Request) -> Answer {
    let body = req.json();
    if body["app_id"] != "cli_test" || body["app_secret"] != "secret_test" {
        return answer(200, envelope(10_014, "app secret invalid"));
    }
    s.tokens_issued += 1;
    let t = format!("t-standin-{}", s.tokens_issued);
    s.tokens.push(t.clone());
    let body = serde_json::json!({
        "code": 0,
        "msg": "ok",
        "tenant_access_token": t,
        "expire": s.token_expire,
    });
    answer(200, body.to_string())
}

fn withdraw(s: &mut State, account: &str, req: &Request) -> Answer {
    let body = req.json();
    let order = body["external_order_id"].as_str().unwrap_or("").to_owned();
    let types: Vec<u64> = body["withdraw_bonus_type"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    if order.is_empty() || types.is_empty() || types.iter().any(|t| *t != 1 && *t != 2) {
        return answer(400, envelope(1_002_001, "invalid param"));
    }
    let w = match s.withdrawals.iter().find(|w| w.external_order_id == order) {
        Some(original) => original.clone(),
        None => {
            let trans_time = match s.next_trans_time.as_mut() {
                Some(t) => {
                    *t += 1;
                    *t - 1
                }
                None => now_ms(),
            };
            let refuse_empty = s.faults.refuse_empty.clone();
            let balance = s.balances.entry(account.to_owned()).or_default();
            let empty = (!types.contains(&1) || balance.points == 0)
                && (!types.contains(&2) || balance.cash.values().all(|m| *m == 0));
            if let (true, Some((code, msg))) = (empty, refuse_empty) {
                return answer(400, envelope(code, &msg));
            }
            let mut assets = Assets::default();
            if types.contains(&1) {
                assets.points = std::mem::take(&mut balance.points);
            }
            if types.contains(&2) {
                assets.cash = std::mem::take(&mut balance.cash);
                assets.cash.retain(|_, m| *m > 0);
            }
            let (account_id, external_order_id) = (account.to_owned(), order);
            let w = Withdrawal {
                external_order_id,
                account_id,
                trans_time,
                assets,
            };
            s.withdrawals.push(w.clone());
            w
        }
    };
    let body = format!(
        r#"{{"code":0,"msg":"success","data":{{"external_order_id":{},"trans_time":"{}","withdrawal_details":{}}}}}"#,
        quote(&w.external_order_id),
        w.trans_time,
        reward_json(&w.assets)
    );
    answer(200, body)
}

/// Parses `{point_bonus, cash_bonus[{currency_type, amount}]}` into points and hundredths.
fn parse_reward(v: &serde_json::Value) -> Option<Assets> {
    let points = v["point_bonus"].as_u64().unwrap_or(0);
    let mut cash = BTreeMap::new();
    for c in v["cash_bonus"].as_array().cloned().unwrap_or_default() {
        let m = minor(&c["amount"].to_string())?;
        *cash
            .entry(c["currency_type"].as_str()?.to_owned())
            .or_insert(0) += m;
    }
    cash.retain(|_, m| *m != 0);
    Some(Assets { points, cash })
}

fn reconcile(s: &mut State, req: &Request) -> Answer {
    let body = req.json();
    let ms = |k: &str| body[k].as_str().and_then(|t| t.parse::<u64>().ok());
    let (Some(start), Some(end)) = (ms("start_trans_time"), ms("end_trans_time")) else {
        return answer(
            400,
            envelope(1_002_001, "invalid param: start/end_trans_time"),
        );
    };
    let mut failed = Vec::new();
    for d in body["trade_details"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let Some(account) = d["account_id"].as_str() else {
            return answer(400, envelope(1_002_001, "invalid param: account_id"));
        };
        let Some(theirs) = parse_reward(&d["total_recharge_reward_info"]) else {
            return answer(400, envelope(1_002_001, "invalid param: amount"));
        };
        let mut ours = Assets::default();
        for w in s
            .withdrawals
            .iter()
            .filter(|w| w.account_id == account && (start..=end).contains(&w.trans_time))
        {
            ours.points += w.assets.points;
            for (c, m) in &w.assets.cash {
                *ours.cash.entry(c.clone()).or_insert(0) += m;
            }
        }
        if ours != theirs {
            failed.push(format!(
                r#"{{"account_id":{},"total_withdraw_reward_info":{},"total_recharge_reward_info":{}}}"#,
                quote(account),
                reward_json(&ours),
                reward_json(&theirs)
            ));
        }
    }
    let body = format!(
        r#"{{"code":0,"msg":"success","data":{{"check_failed_list":[{}]}}}}"#,
        failed.join(",")
    );
    answer(200, body)
}
