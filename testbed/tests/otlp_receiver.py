#!/usr/bin/env python3
"""An OTLP/gRPC receiver for flowscope's OTLP tests, built only from the OpenTelemetry project's
own Python packages (opentelemetry-proto's generated messages and gRPC stubs, grpcio), so that it
shares no code with the agent's encoder.

It prints one JSON object per line on standard output:
  {"listening": PORT}                                    once serving
  {"request": {"signal": "logs"|"metrics", "records": N, "answer": "ok"|"unavailable"|"slow"}}
  {"log": {...}}                                         each log record accepted
  {"metric": {...}}                                      each metric data point accepted

Behaviour (all optional):
  --tls-cert FILE --tls-key FILE   serve TLS with this certificate and key (PEM)
  --tls-client-ca FILE             with TLS, require a client certificate of this CA (mTLS)
  --unavailable N   answer the first N log requests UNAVAILABLE with a RetryInfo of 200 ms
  --slow N:SECONDS  take SECONDS to answer each of the first N log requests (then accept them)
  --reject N        accept log requests but report N rejected records in a partial success
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

LOCK = threading.Lock()


def emit(obj):
    with LOCK:
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def retry_info_status(delay_ms):
    """The trailer a server sends with UNAVAILABLE and a RetryInfo: a google.rpc.Status in
    grpc-status-details-bin (googleapis-common-protos' messages)."""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(delay_ms)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc.StatusCode.UNAVAILABLE.value[0], message="try later", details=[detail]
    )
    return status.SerializeToString()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, args):
        self.args = args
        self.calls = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            self.calls += 1
            n = self.calls
        records = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        if n <= self.args.unavailable:
            emit({"request": {"signal": "logs", "records": records, "answer": "unavailable"}})
            context.set_trailing_metadata(
                (("grpc-status-details-bin", retry_info_status(200)),)
            )
            context.abort(grpc.StatusCode.UNAVAILABLE, "try later")
        answer = "ok"
        if n <= self.args.slow_requests:
            time.sleep(self.args.slow_seconds)
            answer = "slow"
            if not context.is_active():
                # The client gave up waiting: nothing was delivered.
                emit({"request": {"signal": "logs", "records": records, "answer": "abandoned"}})
                return logs_service_pb2.ExportLogsServiceResponse()
        rejected = min(self.args.reject, records)
        headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        emit({"request": {"signal": "logs", "records": records, "answer": answer,
                          "rejected": rejected, "headers": headers}})
        i = 0
        for rl in request.resource_logs:
            resource = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    i += 1
                    if i <= rejected:
                        continue
                    emit({"log": {
                        "resource": resource,
                        "scope": sl.scope.name,
                        "schema_url": sl.schema_url,
                        "time_unix_nano": rec.time_unix_nano,
                        "observed_time_unix_nano": rec.observed_time_unix_nano,
                        "severity_number": rec.severity_number,
                        "severity_text": rec.severity_text,
                        "event_name": rec.event_name,
                        "body": any_value(rec.body),
                        "attributes": attrs(rec.attributes),
                    }})
        resp = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            resp.partial_success.rejected_log_records = rejected
            resp.partial_success.error_message = "rejected by the test receiver"
        return resp


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        points = 0
        for rm in request.resource_metrics:
            resource = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for p in data.data_points:
                        points += 1
                        value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                        emit({"metric": {
                            "resource": resource,
                            "name": m.name,
                            "kind": kind,
                            "monotonic": getattr(data, "is_monotonic", False),
                            "temporality": getattr(data, "aggregation_temporality", 0),
                            "attributes": attrs(p.attributes),
                            "value": value,
                        }})
        emit({"request": {"signal": "metrics", "records": points, "answer": "ok"}})
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:4317")
    p.add_argument("--unavailable", type=int, default=0)
    p.add_argument("--slow", default="0:0")
    p.add_argument("--reject", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-client-ca")
    args = p.parse_args()
    n, secs = args.slow.split(":")
    args.slow_requests, args.slow_seconds = int(n), float(secs)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(args), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    if args.tls_cert:
        def read(path):
            with open(path, "rb") as f:
                return f.read()

        ca = read(args.tls_client_ca) if args.tls_client_ca else None
        creds = grpc.ssl_server_credentials(
            [(read(args.tls_key), read(args.tls_cert))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )
        port = server.add_secure_port(args.listen, creds)
    else:
        port = server.add_insecure_port(args.listen)
    server.start()
    emit({"listening": port, "tls": bool(args.tls_cert), "mtls": bool(args.tls_client_ca)})
    server.wait_for_termination()


if __name__ == "__main__":
    main()
