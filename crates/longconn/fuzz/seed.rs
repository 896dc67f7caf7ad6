//! Writes the seed corpus of the four targets into `corpus/<target>/` (run by `seed.sh`):
//! frames as Lark sends them (the layout of the tests' stand-in server) and at the header bound,
//! fragment sequences the
//! session meets (in order, out of order, repeated, missing, too large, interleaved, across a
//! stall or a reload), and endpoint answers, handshake refusals and pong payloads from the
//! unit tests and spec §11.

use std::fs;
use std::path::{Path, PathBuf};

use lark_longconn::frame::MAX_HEADERS;
use lark_longconn::{Frame, Header};
use longconn_fuzz::{data_frame, event_body, pong, Op};
use prost::Message;

/// The URL of a real endpoint answer (credentials made up).
const URL: &str = "wss://msg-frontier.feishu.cn/ws/v2?fpid=493&aid=552564&device_id=7s&access_key=SECRET&service_id=33554678&ticket=T0P";

struct Corpus {
    dir: PathBuf,
    count: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Corpus {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("create the corpus directory");
        Corpus { dir, count: 0 }
    }

    fn put(&mut self, name: &str, bytes: &[u8]) {
        fs::write(self.dir.join(format!("seed-{name}")), bytes).expect("write a seed");
        self.count += 1;
    }
}

/// `body` split into `sum` nearly equal fragments, as data frames of `message_id`.
fn fragments(message_id: &str, body: &[u8], sum: usize) -> Vec<Vec<u8>> {
    let size = body.len().div_ceil(sum).max(1);
    let mut parts: Vec<&[u8]> = body.chunks(size).collect();
    parts.resize(sum, &[]);
    parts
        .iter()
        .enumerate()
        .map(|(seq, part)| {
            data_frame(
                100 + seq as u64,
                "event",
                message_id,
                sum as u32,
                seq as u32,
                part,
            )
            .encode_to_vec()
        })
        .collect()
}

/// The ops of `frames` in the order `order`.
fn messages(frames: &[Vec<u8>], order: &[usize]) -> Vec<Op> {
    order
        .iter()
        .map(|&i| Op::Message(frames[i].clone()))
        .collect()
}

fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}

fn frame_seeds(c: &mut Corpus) {
    let body = event_body("ev-1", 240);
    c.put(
        "event",
        &data_frame(1, "event", "msg-1", 1, 0, &body).encode_to_vec(),
    );
    for (i, frame) in fragments("msg-2", &body, 3).iter().enumerate() {
        c.put(&format!("fragment-{i}"), frame);
    }
    c.put(
        "card",
        &data_frame(2, "card", "card-1", 1, 0, br#"{"action":{}}"#).encode_to_vec(),
    );
    c.put("ping", &Frame::ping(33_554_678).encode_to_vec());
    c.put(
        "pong-config",
        &pong(Some(
            br#"{"PingInterval":120,"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30}"#,
        ))
        .encode_to_vec(),
    );
    c.put("pong-empty", &pong(None).encode_to_vec());
    c.put(
        "ack",
        &data_frame(3, "event", "msg-3", 1, 0, &body)
            .into_ack(200, 12)
            .encode_to_vec(),
    );
    let every_field = Frame {
        seq_id: 1,
        log_id: 2,
        service: 3,
        method: 1,
        headers: Vec::new(),
        payload_encoding: Some("e".into()),
        payload_type: Some("t".into()),
        payload: Some(b"p".to_vec()),
        log_id_new: Some("n".into()),
    };
    c.put("every-field", &every_field.encode_to_vec());
    c.put("empty", b"");
    for (name, count) in [
        ("headers-at-bound", MAX_HEADERS),
        ("headers-past-bound", MAX_HEADERS + 1),
    ] {
        let mut frame = data_frame(4, "event", "msg-4", 1, 0, b"{}");
        frame.headers.resize(count, Header::default());
        c.put(name, &frame.encode_to_vec());
    }
}

fn reassemble_seeds(c: &mut Corpus) {
    let body = event_body("ev-1", 240);
    let three = fragments("msg-3", &body, 3);
    c.put(
        "single",
        &encode(&[Op::Message(
            data_frame(1, "event", "msg-1", 1, 0, &body).encode_to_vec(),
        )]),
    );
    c.put("in-order", &encode(&messages(&three, &[0, 1, 2])));
    c.put(
        "out-of-order-repeated",
        &encode(&messages(&three, &[2, 0, 0, 1, 1])),
    );
    let mut missing = messages(&three, &[0, 2]);
    missing.extend([Op::Advance(6000), Op::Expire, Op::Message(three[1].clone())]);
    c.put("missing-expired", &encode(&missing));
    let mut kept_alive = messages(&three, &[0]);
    for _ in 0..3 {
        kept_alive.extend([Op::Advance(4000), Op::Message(three[0].clone())]);
    }
    kept_alive.extend([
        Op::Expire,
        Op::Message(three[1].clone()),
        Op::Message(three[2].clone()),
    ]);
    c.put("timer-restarted", &encode(&kept_alive));
    let big = fragments("msg-big", &event_body("ev-big", 700), 3);
    c.put("too-large", &encode(&messages(&big, &[0, 1, 2, 0])));
    let mut interleaved = Vec::new();
    let msgs: Vec<Vec<Vec<u8>>> = (0..5)
        .map(|i| fragments(&format!("msg-{i}"), &event_body(&format!("ev-{i}"), 230), 2))
        .collect();
    for m in &msgs {
        interleaved.push(Op::Message(m[0].clone()));
    }
    for m in &msgs {
        interleaved.push(Op::Message(m[1].clone()));
    }
    c.put("interleaved-evicted", &encode(&interleaved));
    let mut stalled = messages(&three, &[0, 1]);
    stalled.extend([Op::Stall(10_000), Op::Expire, Op::Message(three[2].clone())]);
    c.put("stalled", &encode(&stalled));
    let mut reload = messages(&three, &[0]);
    reload.extend([Op::Limits(64, 128), Op::Message(three[1].clone())]);
    reload.extend([Op::Limits(1024, 8192), Op::Message(three[2].clone())]);
    c.put("reload", &encode(&reload));
    let mut changed = messages(&three, &[0]);
    changed.extend(messages(&fragments("msg-3", &body, 2), &[1]));
    c.put("sum-changed", &encode(&changed));
    let mut control = vec![Op::Message(Frame::ping(1).encode_to_vec())];
    control.extend(messages(&three, &[1]));
    control.push(Op::Message(
        pong(Some(br#"{"PingInterval":5}"#)).encode_to_vec(),
    ));
    control.extend(messages(&three, &[0, 2]));
    c.put("with-control-frames", &encode(&control));

    let frag = |id, sum, seq, len, spare| Op::Fragment {
        id,
        sum,
        seq,
        len,
        spare,
    };
    c.put(
        "fragments",
        &encode(&[
            frag(1, 3, 2, 40, 0),
            frag(2, 2, 0, 100, 0),
            frag(1, 3, 0, 40, 0),
            frag(1, 3, 1, 40, 0),
            frag(2, 2, 1, 100, 0),
        ]),
    );
    c.put(
        "fragments-empty-id",
        &encode(&[
            frag(1, 2, 0, 200, 0),
            frag(0, 2, 0, 10, 0),
            frag(0, 2, 0, 10, 0),
            frag(2, 2, 0, 200, 0),
            frag(0, 2, 1, 10, 0),
        ]),
    );
    c.put(
        "fragments-spare-capacity",
        &encode(&[
            frag(1, 4, 0, 8, 4000),
            frag(1, 4, 1, 8, 4000),
            frag(2, 4, 0, 8, 4000),
            frag(1, 4, 2, 8, 4000),
        ]),
    );
    c.put(
        "fragments-bounds",
        &encode(&[
            frag(1, 0, 0, 1, 0),
            frag(1, 1025, 0, 1, 0),
            frag(1, 1024, 1023, 1, 0),
            frag(1, 2, 5, 1, 0),
            frag(3, 2, 0, 300, 0),
            frag(3, 2, 1, 1, 0),
            frag(4, 1, 0, 257, 0),
        ]),
    );
}

fn bootstrap_seeds(c: &mut Corpus) {
    let answer = |code: i64, url: &str| {
        serde_json::json!({"code": code, "msg": "m", "data": {"URL": url, "ClientConfig":
            {"ReconnectCount": 3, "ReconnectInterval": 2, "ReconnectNonce": 1, "PingInterval": 4}}})
        .to_string()
        .into_bytes()
    };
    let with_status = |status: u16, body: &[u8]| {
        let mut out = status.to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    };
    c.put("ok", &with_status(200, &answer(0, URL)));
    c.put(
        "ws-local",
        &with_status(200, &answer(0, "ws://127.0.0.1:9/ws?service_id=7")),
    );
    c.put("busy", &with_status(200, &answer(1, URL)));
    c.put("internal", &with_status(200, &answer(1_000_040_343, URL)));
    c.put("fatal", &with_status(200, &answer(10003, URL)));
    c.put(
        "rate-limited",
        &with_status(
            429,
            br#"{"code":99991400,"msg":"request trigger frequency limit"}"#,
        ),
    );
    c.put(
        "bad-gateway",
        &with_status(502, b"<html>bad gateway</html>"),
    );
    c.put("no-data", &with_status(200, br#"{"code":0}"#));
    c.put(
        "bad-url",
        &with_status(200, &answer(0, "https://x/?service_id=1")),
    );
    c.put(
        "handshake-limit",
        &with_status(400, b"514\n1000040350\ntoo many"),
    );
    c.put(
        "handshake-forbidden",
        &with_status(403, b"403\n\nforbidden"),
    );
    c.put("handshake-other", &with_status(400, b"500\n1\nretry"));
}

fn client_config_seeds(c: &mut Corpus) {
    for (i, payload) in [
        &br#"{"PingInterval":120,"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30}"#
            [..],
        br#"{"PingInterval":5}"#,
        br#"{"PingInterval":0,"ReconnectInterval":-3,"ReconnectNonce":0,"ReconnectCount":-1}"#,
        br#"{"PingInterval":99999999999,"Extra":1}"#,
        br#"{"PingInterval":3600,"ReconnectInterval":86400,"ReconnectNonce":1000}"#,
        br#"{"ReconnectCount":7,"ReconnectNonce":3}"#,
        br#"{"ReconnectCount":0}"#,
        b"  ",
    ]
    .iter()
    .enumerate()
    {
        let mut seed = vec![i as u8];
        seed.extend_from_slice(payload);
        c.put(&format!("pong-{i}"), &seed);
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let mut counts = Vec::new();
    for (target, seeds) in [
        ("frame", frame_seeds as fn(&mut Corpus)),
        ("reassemble", reassemble_seeds),
        ("bootstrap", bootstrap_seeds),
        ("client_config", client_config_seeds),
    ] {
        let mut c = Corpus::new(&root, target);
        seeds(&mut c);
        counts.push(format!("{} {target}", c.count));
    }
    println!("seeded: {}", counts.join(", "));
}
