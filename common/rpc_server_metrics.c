/*
 * Metrics of the RPC server runtime, in sl_metrics_default():
 *
 *   sluice_rpc_server_started_total{method}        calls begun
 *   sluice_rpc_server_handled_total{method,code}   calls ended, by gRPC code
 *   sluice_rpc_server_handling_seconds{method}     begin to status sent
 *   sluice_rpc_server_msg_received_total{method}   request messages read
 *   sluice_rpc_server_msg_sent_total{method}       response messages written
 *   sluice_rpc_server_open_calls{method}           calls not yet over
 *   sluice_rpc_server_write_queue_full_total       sends refused with SL_EBUSY
 *
 * code is the status the server handed to gRPC (counted then, so a client
 * holding its answer sees it counted), or DEADLINE_EXCEEDED / CANCELLED
 * for a call that ended before the server chose one. A call the peer
 * cancels after the handler finished keeps the handler's code.
 *
 * method is the full path ("/sluice.v1.BookieService/AddEntry"), or
 * "unknown" for paths no handler serves (so a peer cannot mint series).
 * Handles are registered once per method when it is added to a server
 * (every code's counter included, so rate() sees zeros, not gaps), and the
 * same name and labels give the same handles, so several servers in one
 * process share their series. The call path then only touches atomics.
 */
#include <grpc/status.h>

#include "common/log.h"
#include "common/rpc_server_int.h"

static const char *const code_names[SL_RPC_N_CODES] = {
    "OK",                  "CANCELLED",         "UNKNOWN",
    "INVALID_ARGUMENT",    "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS",      "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",           "OUT_OF_RANGE",
    "UNIMPLEMENTED",       "INTERNAL",          "UNAVAILABLE",
    "DATA_LOSS",           "UNAUTHENTICATED",
};

static sl_status init_handles(sl_metrics *reg, sl_rpc_method_metrics *m, const char *method,
                              sl_err *err) {
  const char *const labels[] = {"method", method, NULL};
  sl_status st = sl_metrics_register_counter(
      reg, "sluice_rpc_server_started_total", "RPCs started on the server.", labels,
      &m->started, err);
  for (int code = 0; code < SL_RPC_N_CODES && st == SL_OK; code++) {
    const char *const cl[] = {"method", method, "code", code_names[code], NULL};
    st = sl_metrics_register_counter(reg, "sluice_rpc_server_handled_total",
                                     "RPCs completed on the server, by gRPC status code.", cl,
                                     &m->handled[code], err);
  }
  if (st == SL_OK)
    st = sl_metrics_register_histogram(
        reg, "sluice_rpc_server_handling_seconds",
        "Time from the start of an RPC to its status being sent, in seconds.", labels, NULL,
        0, &m->seconds, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(reg, "sluice_rpc_server_msg_received_total",
                                     "Request messages received by the server.", labels,
                                     &m->msg_received, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(reg, "sluice_rpc_server_msg_sent_total",
                                     "Response messages sent by the server.", labels,
                                     &m->msg_sent, err);
  if (st == SL_OK)
    st = sl_metrics_register_gauge(reg, "sluice_rpc_server_open_calls",
                                   "RPCs started and not yet over.", labels, &m->open, err);
  return st;
}

void sl_rpc_metrics_init_(sl_rpc_method_metrics *m, const char *method) {
  sl_err err = SL_ERR_INIT;
  sl_status st = init_handles(sl_metrics_default(), m, method, &err);
  if (st != SL_OK) /* not fatal: updates skip NULL handles */
    sl_log(SL_LOG_WARN, "event=rpc_metrics_failed method=%s error=\"%s\"", method,
           sl_err_msg(&err, st));
}

sl_metrics_counter *sl_rpc_metrics_queue_full_(void) {
  sl_metrics_counter *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metrics_register_counter(
      sl_metrics_default(), "sluice_rpc_server_write_queue_full_total",
      "Sends refused because the call's write queue was full (SL_EBUSY).", NULL, &c, &err);
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=rpc_metrics_failed error=\"%s\"", sl_err_msg(&err, st));
  return c;
}

void sl_rpc_metrics_ended_(const sl_rpc_method_metrics *m, int code, uint64_t t0_ns) {
  if (code < 0 || code >= SL_RPC_N_CODES) code = GRPC_STATUS_UNKNOWN;
  sl_metrics_counter_inc(m->handled[code]);
  sl_metrics_histogram_observe_since(m->seconds, t0_ns);
}
