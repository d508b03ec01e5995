#!/usr/bin/env python3
"""Pay through a minipay gateway from Python: log in, pay, read the payment back.

A first example of calling minipay.v1.Gateway with grpcio over mutual TLS.
The stubs are generated from the repository's proto/ files each run, into a
temporary directory, so nothing generated is kept beside this file.

    pip install -r examples/python/requirements.txt
    echo pass123 | python3 examples/python/pay.py --gateway 127.0.0.1:7000 \
        --tls-dir /tmp/mp/tls --username alice --to bank_b/456 --amount 12.50

The password is read from standard input (or prompted for on a terminal).
Neither it nor the session key is ever printed.
"""

import argparse
import decimal
import getpass
import importlib
import pathlib
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]

# The gateway's certificate (from `minipay certs`) names `localhost`,
# `127.0.0.1` and `gateway.minipay.internal`; like the Rust client, check it
# for `localhost` whatever address we connect to.
SERVER_NAME = "localhost"

# How long one call may take before we give up on it, in seconds.
CALL_TIMEOUT_S = 30


def generate_stubs(proto_dir, out_dir):
    """Compiles gateway.proto into out_dir and imports the two modules."""
    status = protoc.main([
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "minipay/v1/gateway.proto",
    ])
    if status != 0:
        sys.exit(f"error: could not compile {proto_dir}/minipay/v1/gateway.proto")
    # The generated files live in the package `minipay.v1` under out_dir.
    sys.path.insert(0, str(out_dir))
    messages = importlib.import_module("minipay.v1.gateway_pb2")
    services = importlib.import_module("minipay.v1.gateway_pb2_grpc")
    return messages, services


def mtls_channel(address, tls_dir):
    """A channel that trusts only the minipay CA and presents the client certificate.

    The gateway serves clients only if they present a certificate with the
    client role, which `minipay certs` writes as client.pem / client.key.
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls_dir / "ca.pem").read_bytes(),
        private_key=(tls_dir / "client.key").read_bytes(),
        certificate_chain=(tls_dir / "client.pem").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    return grpc.secure_channel(address, credentials, options)


def minor_units(amount):
    """'12.50' -> 1250. Money is exact: no floats, at most two decimal places."""
    try:
        value = decimal.Decimal(amount)
    except decimal.InvalidOperation:
        sys.exit(f"error: --amount {amount!r} is not a decimal number")
    if value <= 0 or value != value.quantize(decimal.Decimal("0.01")):
        sys.exit(f"error: --amount {amount!r} must be positive with at most 2 decimal places")
    return int(value * 100)


def show(payment, messages):
    """One line per payment: id, amount, accounts, status and why."""
    status = messages.PaymentStatus.Name(payment.status).removeprefix("PAYMENT_STATUS_").lower()
    amount = decimal.Decimal(payment.amount).scaleb(-2)
    line = (f"{payment.txn_id}: {amount:.2f} {payment.currency} "
            f"{payment.from_bank}/{payment.from_account} -> {payment.to_bank}/{payment.to_account}: {status}")
    if payment.reason:
        line += f" ({payment.reason})"
    if payment.replayed:
        line += " [already processed; not paid again]"
    print(line + ("" if payment.settled else " [settling at the banks]"))


def log_out(gateway, messages, session):
    """Ends the session; best effort, so an earlier error is the one reported."""
    try:
        gateway.Logout(messages.LogoutRequest(), metadata=session, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError:
        pass


def read_password():
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="HOST:PORT (https:// is allowed)")
    parser.add_argument("--tls-dir", required=True, type=pathlib.Path,
                        help="directory from `minipay certs` (ca.pem, client.pem, client.key)")
    parser.add_argument("--username", required=True)
    parser.add_argument("--to", required=True, help="BANK/ACCOUNT, e.g. bank_b/456")
    parser.add_argument("--amount", required=True, help="major units, e.g. 12.50")
    parser.add_argument("--currency", default="INR")
    parser.add_argument("--txn-id", default=None,
                        help="reuse an id to retry safely (default: a new UUID)")
    parser.add_argument("--proto-dir", type=pathlib.Path, default=REPOSITORY / "proto")
    args = parser.parse_args()

    to_bank, _, to_account = args.to.partition("/")
    if not to_bank or not to_account:
        sys.exit("error: --to must be BANK/ACCOUNT")
    amount = minor_units(args.amount)
    # The client chooses the transaction id. Sending the same id again can
    # never pay twice: the gateway answers a repeat with the first outcome.
    txn_id = args.txn_id or str(uuid.uuid4())
    address = args.gateway.removeprefix("https://")
    password = read_password()

    with tempfile.TemporaryDirectory(prefix="minipay-stubs-") as stubs:
        messages, services = generate_stubs(args.proto_dir, stubs)
        with mtls_channel(address, args.tls_dir) as channel:
            gateway = services.GatewayStub(channel)
            try:
                login = gateway.Login(
                    messages.LoginRequest(username=args.username, password=password),
                    timeout=CALL_TIMEOUT_S)
                # Every call after Login carries the session key as a bearer token.
                session = [("authorization", f"Bearer {login.session_key}")]
                try:
                    paid = gateway.Pay(
                        messages.PayRequest(txn_id=txn_id, to_bank=to_bank, to_account=to_account,
                                            amount=amount, currency=args.currency),
                        metadata=session, timeout=CALL_TIMEOUT_S)
                    print("paid:", end=" ")
                    show(paid, messages)
                    # The gateway keeps every outcome under its id; read it back.
                    stored = gateway.GetPayment(messages.GetPaymentRequest(txn_id=txn_id),
                                                metadata=session, timeout=CALL_TIMEOUT_S)
                    print("read back:", end=" ")
                    show(stored, messages)
                finally:
                    log_out(gateway, messages, session)
            except grpc.RpcError as error:
                # A payment without an answer (say, UNAVAILABLE or
                # DEADLINE_EXCEEDED) may or may not have been made: run
                # again with the same --txn-id to learn its outcome.
                sys.exit(f"error: {error.code().name}: {error.details()} (txn id {txn_id})")


if __name__ == "__main__":
    main()
