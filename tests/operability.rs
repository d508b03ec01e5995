//! What an operator and a gRPC user see of real server processes besides
//! payments: `grpc.health.v1` (SERVING once recovered, NOT_SERVING while
//! draining after SIGTERM), server reflection (v1 and v1alpha) behind the
//! same mTLS, Prometheus metrics that a payment moves, and trace ids that
//! follow one payment from the gateway's log into each bank's.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{SETUP, Scratch, authorized, channel, login, start_cluster, txn_id};
use minipay_proto::v1 as proto;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

async fn health(tls: &Path, address: SocketAddr) -> HealthClient<Channel> {
    HealthClient::new(channel(tls, "client", address).await)
}

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|response| response.into_inner().status)
        .map_err(|status| status.code())
}

fn pay_request(txn: u32, amount: u64) -> proto::PayRequest {
    proto::PayRequest {
        txn_id: txn_id(txn),
        to_bank: "bank_b".into(),
        to_account: "789".into(),
        amount,
        currency: "INR".into(),
    }
}

const SERVING: i32 = ServingStatus::Serving as i32;
const NOT_SERVING: i32 = ServingStatus::NotServing as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_once_recovered_and_not_serving_while_draining() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    // A long drain: the gateway serves on, NOT_SERVING, until this ends.
    let mut cluster = start_cluster(&scratch, &[], &["--drain-delay", "3s"]);
    let tls = scratch.tls();

    let mut gateway = health(&tls, cluster.gateway.address).await;
    for service in ["", "minipay.v1.Gateway", "minipay.v1.Decisions"] {
        assert_eq!(
            check(&mut gateway, service).await,
            Ok(SERVING),
            "{service:?}"
        );
    }
    assert_eq!(
        check(&mut gateway, "minipay.v1.Bank").await,
        Err(tonic::Code::NotFound),
        "the gateway does not serve the Bank service"
    );
    let mut bank = health(&tls, cluster.banks[0].address).await;
    for service in ["", "minipay.v1.Bank"] {
        assert_eq!(check(&mut bank, service).await, Ok(SERVING), "{service:?}");
    }
    // Probes answered OK are not logged at the default level (one line per
    // probe would bury the payments); the refused one (NOT_FOUND) is.
    let gateway_log = std::fs::read_to_string(scratch.dir.path().join("gateway.log")).unwrap();
    let probe_lines: Vec<&str> = gateway_log
        .lines()
        .filter(|line| line.contains("/grpc.health.v1.Health/Check"))
        .collect();
    assert_eq!(probe_lines.len(), 1, "{probe_lines:?}");
    assert!(probe_lines[0].contains("NOT_FOUND"), "{probe_lines:?}");

    // Watch, then SIGTERM: the stream reports NOT_SERVING before the port
    // closes, and calls are still answered while draining.
    let mut watch = gateway
        .watch(HealthCheckRequest {
            service: "minipay.v1.Gateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first: HealthCheckResponse = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, SERVING);
    cluster.gateway.signal("TERM");
    let next = watch
        .message()
        .await
        .unwrap()
        .expect("a status while draining");
    assert_eq!(next.status, NOT_SERVING);
    assert_eq!(check(&mut gateway, "").await, Ok(NOT_SERVING));
    let mut client = proto::gateway_client::GatewayClient::new(
        channel(&tls, "client", cluster.gateway.address).await,
    );
    let key = login(&mut client, "alice", "pass123").await;
    let paid = client
        .pay(authorized(pay_request(1, 100), &key))
        .await
        .expect("a draining gateway still serves")
        .into_inner();
    assert_eq!(paid.status, proto::PaymentStatus::Committed as i32);
    let exit = cluster.gateway.child.wait().unwrap();
    assert!(exit.success(), "SIGTERM after draining exits 0: {exit}");
}

/// A server process started by hand (so the test sees it before it
/// listens), SIGKILLed when dropped.
struct Unrecovered {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Unrecovered {
    /// The address after `prefix` on the next stdout line that has one.
    fn line_after(&mut self, prefix: &str) -> SocketAddr {
        for line in self.lines.by_ref() {
            if let Some(address) = line.unwrap().strip_prefix(prefix) {
                return address.parse().unwrap();
            }
        }
        panic!("the server exited before printing {prefix:?}");
    }
}

impl Drop for Unrecovered {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_and_calls_unavailable_until_recovery_is_done() {
    use std::io::BufRead;
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let tls = scratch.tls();
    let hold = scratch.dir.path().join("recover-now");
    let log = std::fs::File::create(scratch.dir.path().join("bank_a.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(common::bank_args(&scratch, "bank_a", None))
        .env(minipay::servers::serving::HOLD_RECOVERY_VAR, &hold)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut bank = Unrecovered {
        child,
        lines: std::io::BufReader::new(stdout).lines(),
    };
    let address = bank.line_after("bound ");

    // Bound, recovery held: the port answers, but not yet for the ledger.
    let mut health = health(&tls, address).await;
    for service in ["", "minipay.v1.Bank"] {
        assert_eq!(
            check(&mut health, service).await,
            Ok(NOT_SERVING),
            "{service:?}"
        );
    }
    let mut client = common::bank_client(&tls, "gateway", address).await;
    let refused = client
        .get_account(proto::GetAccountRequest {
            account_no: "123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("recovering"), "{refused:?}");

    std::fs::write(&hold, b"").unwrap();
    let listening = tokio::task::spawn_blocking(move || {
        let listening = bank.line_after("listening ");
        (bank, listening)
    })
    .await
    .unwrap();
    let _bank = listening.0;
    assert_eq!(listening.1, address);
    for service in ["", "minipay.v1.Bank"] {
        assert_eq!(
            check(&mut health, service).await,
            Ok(SERVING),
            "{service:?}"
        );
    }
    let account = client
        .get_account(proto::GetAccountRequest {
            account_no: "123".into(),
        })
        .await
        .expect("served once recovered")
        .into_inner();
    assert_eq!(account.balance, 100_000);
}

/// The services a reflection `list_services` names (v1).
async fn reflected_services(tls: &Path, address: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel(tls, "client", address).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// A stream of one message (the reflection call is bidirectional).
fn tokio_stream_once<T: Send + Unpin + 'static>(
    item: T,
) -> impl futures_core::Stream<Item = T> + Send {
    struct Once<T>(Option<T>);
    impl<T: Unpin> futures_core::Stream for Once<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.take())
        }
    }
    Once(Some(item))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_behind_mtls() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let cluster = start_cluster(&scratch, &[], &[]);
    let tls = scratch.tls();
    let gateway = reflected_services(&tls, cluster.gateway.address).await;
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "minipay.v1.Decisions",
        "minipay.v1.Gateway",
    ] {
        assert!(
            gateway.iter().any(|name| name == expected),
            "{expected} in {gateway:?}"
        );
    }
    assert!(
        !gateway.iter().any(|name| name == "minipay.v1.Bank"),
        "{gateway:?}"
    );
    let bank = reflected_services(&tls, cluster.banks[0].address).await;
    assert!(
        bank.iter().any(|name| name == "minipay.v1.Bank"),
        "{bank:?}"
    );
    assert!(
        !bank
            .iter()
            .any(|name| name.starts_with("minipay.v1.G") || name.ends_with("Decisions")),
        "a bank lists only what it serves: {bank:?}"
    );

    // v1alpha (what older grpcurl versions ask) describes a method's types.
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut client =
        ServerReflectionClient::new(channel(&tls, "client", cluster.gateway.address).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "minipay.v1.Gateway.Pay".into(),
        )),
    };
    let answer = client
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("no descriptor for minipay.v1.Gateway.Pay: {answer:?}");
    };
    let decoded: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost::Message::decode(bytes.as_slice()).unwrap())
        .collect();
    assert!(
        decoded.iter().any(|file| file
            .service
            .iter()
            .any(|service| service.name() == "Gateway"
                && service.method.iter().any(|method| method.name() == "Pay"))),
        "the Gateway service with its Pay method is described"
    );

    // Without a client certificate, reflection is refused like everything else.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.gateway.address))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(
                        std::fs::read(tls.join("ca.pem")).unwrap(),
                    ))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await;
    if let Ok(plain) = plain {
        let mut client =
            tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(plain);
        let refused = client
            .server_reflection_info(tokio_stream_once(
                tonic_reflection::pb::v1::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(
                        tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                            String::new(),
                        ),
                    ),
                },
            ))
            .await;
        let listed = match refused {
            Err(_) => None,
            Ok(stream) => stream.into_inner().message().await.ok().flatten(),
        };
        assert!(
            listed.is_none(),
            "a client without a certificate got {listed:?}"
        );
    }
}

/// One sample of the exposition text: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses Prometheus text exposition format 0.0.4 strictly enough to fail
/// on what a scraper would reject: every sample's family has a `# TYPE`
/// before it, names and label names are valid, label values are quoted
/// with only `\\`, `\"`, `\n` escapes, values are numbers.
fn parse_exposition(text: &str) -> Vec<Sample> {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut typed: std::collections::HashMap<String, String> = Default::default();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (
                parts.next().unwrap(),
                parts.next().expect("a name"),
                parts.next().unwrap_or(""),
            );
            assert!(valid_name(name), "{line}");
            if keyword == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                    "{line}"
                );
                assert!(
                    typed.insert(name.to_owned(), rest.to_owned()).is_none(),
                    "TYPE twice: {line}"
                );
            } else {
                assert_eq!(keyword, "HELP", "{line}");
            }
            continue;
        }
        assert!(!line.is_empty(), "no blank lines");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("closing brace: {line}"));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(valid_name(&key), "label name {key:?}: {line}");
                    assert_eq!(chars.next(), Some('"'), "quoted value: {line}");
                    let mut value = String::new();
                    loop {
                        match chars
                            .next()
                            .unwrap_or_else(|| panic!("unterminated: {line}"))
                        {
                            '"' => break,
                            '\\' => match chars.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?}: {line}"),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((key, value));
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        other => panic!("after a label {other:?}: {line}"),
                    }
                }
                (name.to_owned(), labels)
            }
        };
        assert!(valid_name(&name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (typed.get(base).map(String::as_str) == Some("histogram")).then(|| base.to_owned())
            })
            .unwrap_or_else(|| name.clone());
        assert!(typed.contains_key(&family), "no TYPE before {line}");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` with exactly `labels` (0 if absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && sample.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.iter().any(|(k, v)| k == key && v == value))
        })
        .map_or(0.0, |sample| sample.value)
}

/// `GET /metrics` over plain HTTP/1.1, the body.
async fn scrape(address: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: minipay\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_moves_the_metrics_and_the_text_parses() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let cluster = start_cluster(&scratch, &metrics, &metrics);
    let tls = scratch.tls();
    let gateway_metrics = cluster.gateway.metrics.expect("the gateway serves metrics");
    let bank_metrics = cluster.banks[1].metrics.expect("bank_b serves metrics");

    let before = parse_exposition(&scrape(gateway_metrics).await);
    let bank_before = parse_exposition(&scrape(bank_metrics).await);
    let committed = [("outcome", "committed")];
    let mut client = proto::gateway_client::GatewayClient::new(
        channel(&tls, "client", cluster.gateway.address).await,
    );
    let key = login(&mut client, "alice", "pass123").await;
    let paid = client
        .pay(authorized(pay_request(7, 250), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, proto::PaymentStatus::Committed as i32);
    // A repeat is answered from the table: not a second payment.
    client
        .pay(authorized(pay_request(7, 250), &key))
        .await
        .unwrap();
    // A bad password: a refused login.
    let refused = client
        .login(proto::LoginRequest {
            username: "alice".into(),
            password: "wrong-password".into(),
        })
        .await
        .unwrap_err();

    let after = parse_exposition(&scrape(gateway_metrics).await);
    assert_eq!(
        value(&after, "minipay_payments_total", &committed)
            - value(&before, "minipay_payments_total", &committed),
        1.0,
        "one payment committed, once"
    );
    assert_eq!(
        value(&after, "minipay_payment_duration_seconds_count", &[])
            - value(&before, "minipay_payment_duration_seconds_count", &[]),
        1.0
    );
    for phase in ["prepare", "commit"] {
        assert!(
            value(
                &after,
                "minipay_phase_duration_seconds_count",
                &[("phase", phase)]
            ) >= 1.0,
            "{phase} timed"
        );
    }
    let refused_code = minipay::rpc::request_log::code_name(refused.code());
    assert_eq!(
        value(
            &after,
            "minipay_logins_refused_total",
            &[("code", refused_code)]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "minipay_requests_total",
            &[("method", "/minipay.v1.Gateway/Pay"), ("code", "OK")]
        ) >= 2.0
    );
    assert!(value(&after, "minipay_wal_sync_duration_seconds_count", &[]) >= 2.0);
    let buckets: Vec<&Sample> = after
        .iter()
        .filter(|sample| sample.name == "minipay_wal_sync_duration_seconds_bucket")
        .collect();
    assert!(
        buckets
            .windows(2)
            .all(|pair| pair[0].value <= pair[1].value),
        "buckets are cumulative"
    );
    assert_eq!(
        buckets.last().map(|sample| sample.value),
        Some(value(
            &after,
            "minipay_wal_sync_duration_seconds_count",
            &[]
        )),
        "+Inf is the count"
    );
    assert!(
        value(&after, "minipay_wal_bytes", &[]) > 0.0,
        "segments on disk"
    );
    assert_eq!(value(&after, "minipay_unsettled_payments", &[]), 0.0);

    let bank_after = parse_exposition(&scrape(bank_metrics).await);
    for (name, labels) in [
        ("minipay_bank_prepares_total", &[("vote", "yes")][..]),
        ("minipay_bank_commits_total", &[][..]),
    ] {
        assert_eq!(
            value(&bank_after, name, labels) - value(&bank_before, name, labels),
            1.0,
            "{name} at the payee's bank"
        );
    }
    assert_eq!(value(&bank_after, "minipay_in_doubt_holds", &[]), 0.0);
    let series = |samples: &[Sample]| {
        samples
            .iter()
            .filter(|s| s.name.starts_with("minipay_"))
            .count()
    };
    assert!(series(&bank_after) > 5);
}

/// Whether a line of `log` carries `trace` (in its `trace_id` or `traces`
/// field) and mentions `what` (a txn id, or the batch method).
fn logged(log: &Path, trace: &str, what: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|line| line.contains(trace) && line.contains(what))
}

/// Waits until the gateway logged `txn` under `trace` and each bank logged
/// the prepare and the phase-2 batches that carried it (phase 2 may still
/// be on its way when the payment is answered).
async fn wait_for_the_whole_path(dir: &Path, trace: &str, txn: &str) {
    common::wait_until(
        "the trace id on the gateway's and both banks' lines",
        || async {
            logged(&dir.join("gateway.log"), trace, txn)
                && ["bank_a.log", "bank_b.log"].iter().all(|bank| {
                    logged(&dir.join(bank), trace, "/minipay.v1.Bank/PrepareBatch")
                        && logged(&dir.join(bank), trace, "/minipay.v1.Bank/FinishBatch")
                })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_follows_a_payment_into_every_bank_log() {
    let scratch = Scratch::new(&["bank_a", "bank_b"], SETUP);
    let _cluster = start_cluster(&scratch, &[], &[]);
    let cluster = &_cluster;
    let tls = scratch.tls();
    let mut client = proto::gateway_client::GatewayClient::new(
        channel(&tls, "client", cluster.gateway.address).await,
    );
    let key = login(&mut client, "alice", "pass123").await;

    // A trace the client started: the W3C header is taken as it is.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = authorized(pay_request(11, 100), &key);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let paid = client.pay(request).await.unwrap().into_inner();
    assert_eq!(paid.status, proto::PaymentStatus::Committed as i32);
    wait_for_the_whole_path(scratch.dir.path(), trace, &txn_id(11)).await;

    // Without a traceparent the gateway makes one up: the id on its Pay
    // line is the one the banks log.
    let paid = client
        .pay(authorized(pay_request(12, 100), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, proto::PaymentStatus::Committed as i32);
    let txn = txn_id(12);
    let dir = scratch.dir.path();
    let gateway_log = std::fs::read_to_string(dir.join("gateway.log")).unwrap();
    let line = gateway_log
        .lines()
        .find(|line| line.contains(&txn) && line.contains("/minipay.v1.Gateway/Pay"))
        .expect("the gateway's Pay line");
    let made_up = line
        .split("trace_id=")
        .nth(1)
        .expect("a trace_id field")
        .chars()
        .take(32)
        .collect::<String>();
    assert_eq!(made_up.len(), 32);
    assert!(made_up.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(made_up, trace);
    wait_for_the_whole_path(dir, &made_up, &txn).await;
}
