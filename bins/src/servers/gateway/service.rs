//! The gateway's gRPC services: `Gateway` for clients (behind the session
//! layer) and `Decisions` for banks. Thin: decode, call the coordinator,
//! encode; every refusal becomes a status in `refusal`, nowhere else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use coordinator::{
    Endpoint, Gateway, GatewayError, Payment, PaymentRequest, Status as PaymentStatus,
};
use minipay_proto::v1 as proto;
use money::{AccountNo, Amount, BankName, Malformed, TxnId};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tower::Service;
use tracing::Instrument;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::rpc::request_log::{code_name, note};
use crate::rpc::session_key::bearer;
use crate::rpc::tls::Role;
use crate::servers::gateway::bank_clients::BankClients;
use crate::servers::gateway::password_pool::PasswordPool;
use crate::servers::gateway::refusal::Refusal;

/// The authenticated user, put in a request's extensions by [`SessionAuth`].
#[derive(Clone, Debug)]
pub struct SessionUser(pub String);

/// Admits only client certificates, and checks `authorization: Bearer
/// <session key>` on every call but Register and Login; the user goes into
/// the request's extensions and the log line.
#[derive(Clone)]
pub struct SessionAuth<S> {
    inner: S,
    gateway: Arc<Gateway<BankClients>>,
}

impl<S> SessionAuth<S> {
    pub fn new(inner: S, gateway: Arc<Gateway<BankClients>>) -> SessionAuth<S> {
        SessionAuth { inner, gateway }
    }
}

impl<S: NamedService> NamedService for SessionAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SessionAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let role = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs| crate::rpc::tls::peer_role(&certs));
        if role != Some(Role::Client) {
            let refused = Status::from(Refusal::NotAClient { role });
            return Box::pin(std::future::ready(Ok(refused.into_http())));
        }
        let path = request.uri().path();
        let open = path.ends_with("/Register") || path.ends_with("/Login");
        if !open {
            let user = match bearer(request.headers()) {
                None => Err(Status::from(Refusal::NoSessionKey)),
                Some(key) => self
                    .gateway
                    .authenticate(key)
                    .map_err(|error| Status::from(Refusal::from(error))),
            };
            match user {
                Ok(user) => {
                    note("user", &user);
                    request.extensions_mut().insert(SessionUser(user));
                }
                Err(refused) => return Box::pin(std::future::ready(Ok(refused.into_http()))),
            }
        }
        Box::pin(self.inner.call(request))
    }
}

pub struct GatewayService {
    gateway: Arc<Gateway<BankClients>>,
    banks: BankClients,
    passwords: PasswordPool,
    currency: String,
    /// How long a repeated in-flight txn id waits for its outcome.
    outcome_wait: Duration,
    on_storage_failure: Arc<dyn Fn() + Send + Sync>,
}

impl GatewayService {
    pub fn new(
        gateway: Arc<Gateway<BankClients>>,
        banks: BankClients,
        passwords: PasswordPool,
        on_storage_failure: Arc<dyn Fn() + Send + Sync>,
    ) -> GatewayService {
        let options = gateway.options();
        let currency = options.currency.clone();
        let outcome_wait = options.prepare_timeout + options.commit_timeout;
        GatewayService {
            gateway,
            banks,
            passwords,
            currency,
            outcome_wait,
            on_storage_failure,
        }
    }

    /// A coordinator error as a status; a failed decision log also stops
    /// the gateway (fail-stop).
    fn fail(&self, error: GatewayError) -> Status {
        if error.stops_the_gateway() {
            tracing::error!(%error, "decision log failed; stopping the gateway");
            (self.on_storage_failure)();
        }
        Refusal::from(error).into()
    }

    /// The gRPC client of one of the gateway's banks.
    fn bank_client(
        &self,
        bank: &BankName,
    ) -> Result<proto::bank_client::BankClient<tonic::transport::Channel>, Status> {
        self.banks
            .client(bank)
            .ok_or_else(|| self.fail(GatewayError::UnknownBank { bank: bank.clone() }))
    }

    /// Asks `bank` to open an account for a new user.
    async fn open_account(
        &self,
        bank: &BankName,
        owner: &str,
        initial_balance: u64,
    ) -> Result<AccountNo, Status> {
        let not_opened = |detail: String| Refusal::AccountNotOpened {
            bank: bank.clone(),
            detail,
        };
        let opened = self
            .bank_client(bank)?
            .open_account(proto::OpenAccountRequest {
                owner: owner.to_owned(),
                initial_balance,
                account_no: String::new(),
            })
            .await
            .map_err(|bank_status| not_opened(bank_status.message().to_owned()))?
            .into_inner();
        AccountNo::parse(&opened.account_no).map_err(|malformed| {
            not_opened(format!("it answered a bad account number: {malformed}")).into()
        })
    }

    fn money(&self, amount: u64) -> String {
        format!("{} {}", money::Amount(amount), self.currency)
    }
}

fn user_of<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<SessionUser>()
        .map(|user| user.0.clone())
        .ok_or_else(|| Refusal::NoSessionKey.into())
}

fn malformed(field: &'static str) -> impl Fn(Malformed) -> Status {
    move |malformed| Refusal::Malformed { field, malformed }.into()
}

fn parse_txn(text: &str) -> Result<TxnId, Status> {
    TxnId::parse(text).map_err(malformed("txn_id"))
}

fn parse_bank(text: &str, field: &'static str) -> Result<BankName, Status> {
    BankName::parse(text).map_err(malformed(field))
}

fn parse_account(text: &str, field: &'static str) -> Result<AccountNo, Status> {
    AccountNo::parse(text).map_err(malformed(field))
}

fn payment_to_proto(payment: &Payment) -> proto::Payment {
    let request = &payment.request;
    proto::Payment {
        txn_id: request.txn.to_string(),
        status: match payment.status {
            PaymentStatus::Initiated => proto::PaymentStatus::Initiated,
            PaymentStatus::Committed => proto::PaymentStatus::Committed,
            PaymentStatus::Aborted => proto::PaymentStatus::Aborted,
        } as i32,
        reason: payment.reason.clone(),
        from_bank: request.from.bank.to_string(),
        from_account: request.from.account.to_string(),
        to_bank: request.to.bank.to_string(),
        to_account: request.to.account.to_string(),
        amount: request.amount.0,
        currency: request.currency.clone(),
        replayed: payment.replayed,
        settled: payment.ended,
    }
}

/// The client's IP address, for the per-address rate limit.
fn client_address<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    request.remote_addr().map(|address| address.ip())
}

#[tonic::async_trait]
impl proto::gateway_server::Gateway for GatewayService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let address = client_address(&request);
        let request = request.into_inner();
        note("user", &request.username);
        note("amount", self.money(request.initial_balance));
        let bank = parse_bank(&request.bank, "bank")?;
        // The username is reserved from here until the user is written.
        let registration = self
            .gateway
            .register_begin(&request.username, &request.password, &bank, address)
            .map_err(|error| self.fail(error))?;
        // Hashed before the bank opens an account, so a busy pool refuses
        // the registration with nothing opened anywhere.
        let password = request.password;
        let salt = registration.salt();
        let password_hash = self
            .passwords
            .run(move |hasher| hasher.hash(&password, salt))
            .await
            .map_err(Refusal::from)?;
        let account = self
            .open_account(&bank, &request.username, request.initial_balance)
            .await?;
        registration
            .finish(password_hash, &account)
            .await
            .map_err(|error| self.fail(error))?;
        Ok(Response::new(proto::RegisterResponse {
            bank: bank.to_string(),
            account_no: account.to_string(),
        }))
    }

    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let answer: Result<_, Status> = async {
            let address = client_address(&request);
            let request = request.into_inner();
            note("user", &request.username);
            let attempt = self
                .gateway
                .login_begin(&request.username, address)
                .map_err(|error| self.fail(error))?;
            let password = request.password;
            let (attempt, matched) = self
                .passwords
                .run(move |hasher| {
                    let matched = hasher.verify(&password, attempt.hash());
                    (attempt, matched)
                })
                .await
                .map_err(Refusal::from)?;
            let (key, expires_at_ms) = self
                .gateway
                .login_end(attempt, matched)
                .map_err(|error| self.fail(error))?;
            Ok(Response::new(proto::LoginResponse {
                session_key: key,
                expires_at_ms,
            }))
        }
        .await;
        if let Err(status) = &answer {
            metrics::counter!("minipay_logins_refused_total", "code" => code_name(status.code()))
                .increment(1);
        }
        answer
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let key = bearer(request.metadata().as_ref())
            .unwrap_or_default()
            .to_owned();
        self.gateway
            .logout(&key)
            .map_err(|error| self.fail(error))?;
        Ok(Response::new(proto::LogoutResponse {}))
    }

    async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::GetBalanceResponse>, Status> {
        let user = user_of(&request)?;
        let (bank, account) = self.gateway.user_account(&user).ok_or_else(|| {
            self.fail(GatewayError::UnknownUser {
                username: user.clone(),
            })
        })?;
        let client = self.bank_client(&bank)?;
        let read = || {
            let mut client = client.clone();
            let (bank, account) = (bank.clone(), account.to_string());
            async move {
                client
                    .get_account(proto::GetAccountRequest {
                        account_no: account,
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|bank_status| {
                        Status::from(Refusal::BankUnavailable {
                            bank,
                            detail: bank_status.message().to_owned(),
                        })
                    })
            }
        };
        let bound = tokio::time::sleep(self.gateway.options().commit_timeout);
        let (found, unsettled) = self
            .gateway
            .read_your_writes(&bank, &account, bound, read)
            .await?;
        Ok(Response::new(proto::GetBalanceResponse {
            bank: bank.to_string(),
            account_no: account.to_string(),
            balance: found.balance,
            available: found.available,
            currency: found.currency,
            unsettled: u32::try_from(unsettled).unwrap_or(u32::MAX),
        }))
    }

    async fn pay(
        &self,
        request: Request<proto::PayRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let answer: Result<_, Status> = async {
            let user = user_of(&request)?;
            let request = request.into_inner();
            note("txn_id", &request.txn_id);
            note("amount", self.money(request.amount));
            let txn = parse_txn(&request.txn_id)?;
            let to_bank = parse_bank(&request.to_bank, "to_bank")?;
            let to_account = parse_account(&request.to_account, "to_account")?;
            let (from_bank, from_account) = self.gateway.user_account(&user).ok_or_else(|| {
                self.fail(GatewayError::UnknownUser {
                    username: user.clone(),
                })
            })?;
            let payment = PaymentRequest {
                txn,
                from: Endpoint {
                    bank: from_bank,
                    account: from_account,
                },
                to: Endpoint {
                    bank: to_bank,
                    account: to_account,
                },
                amount: Amount(request.amount),
                currency: request.currency,
            };
            // The 2PC runs in its own task: a client hanging up must never leave
            // a payment half-coordinated. The task answers once the decision is
            // durable, then runs phase 2.
            let gateway = Arc::clone(&self.gateway);
            let (answer, answered) = tokio::sync::oneshot::channel();
            // It carries the call's trace id and span, so its lines (and its
            // calls to the banks) are the call's.
            let coordinate = async move {
                let paid = gateway.pay(&user, payment).await;
                let phase_two = matches!(&paid, Ok(paid) if paid.phase_two_pending);
                let _ = answer.send(paid.map(|paid| paid.payment));
                if phase_two && let Err(error) = gateway.phase_two(txn).await {
                    // The decision log failed; the retry loop stops the gateway.
                    tracing::error!(txn_id = %txn, %error, "phase 2 could not finish");
                }
            }
            .instrument(tracing::Span::current());
            match crate::rpc::trace::current() {
                Some(trace) => tokio::spawn(crate::rpc::trace::scope(trace, coordinate)),
                None => tokio::spawn(coordinate),
            };
            let outcome = match tokio::time::timeout(self.outcome_wait, answered).await {
                Ok(joined) => joined
                    .map_err(|_| Status::from(Refusal::PaymentTaskLost))?
                    .map_err(|error| self.fail(error))?,
                // Initiated before the task started, so it is in the table.
                Err(_) => self
                    .gateway
                    .current(txn)
                    .map_err(|error| self.fail(error))?
                    .ok_or_else(|| Status::from(Refusal::PaymentTaskLost))?,
            };
            if outcome.replayed {
                note("retry", true);
            }
            if !outcome.reason.is_empty() {
                note("reason", &outcome.reason);
            }
            Ok(Response::new(payment_to_proto(&outcome)))
        }
        .await;
        if answer.is_err() {
            metrics::counter!("minipay_payments_total", "outcome" => "refused").increment(1);
        }
        answer
    }

    async fn get_payment(
        &self,
        request: Request<proto::GetPaymentRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let user = user_of(&request)?;
        note("txn_id", &request.get_ref().txn_id);
        let txn = parse_txn(&request.get_ref().txn_id)?;
        let payment = self
            .gateway
            .payment(&user, txn)
            .map_err(|error| self.fail(error))?;
        Ok(Response::new(payment_to_proto(&payment)))
    }
}

/// `Decisions`: banks' in-doubt questions.
pub struct DecisionService {
    gateway: Arc<Gateway<BankClients>>,
}

impl DecisionService {
    pub fn new(gateway: Arc<Gateway<BankClients>>) -> DecisionService {
        DecisionService { gateway }
    }
}

#[tonic::async_trait]
impl proto::decisions_server::Decisions for DecisionService {
    async fn get_decision(
        &self,
        request: Request<proto::GetDecisionRequest>,
    ) -> Result<Response<proto::GetDecisionResponse>, Status> {
        note("txn_id", &request.get_ref().txn_id);
        let txn = parse_txn(&request.get_ref().txn_id)?;
        let decision = self
            .gateway
            .decision(txn)
            .await
            .map_err(|error| Status::from(Refusal::from(error)))?;
        let decision = match decision {
            coordinator::Decision::Commit => proto::Decision::Commit,
            coordinator::Decision::Abort => proto::Decision::Abort,
        };
        note("vote", format!("{decision:?}"));
        Ok(Response::new(proto::GetDecisionResponse {
            decision: decision as i32,
        }))
    }
}
