/*
 * Internals shared by metadata/etcd.c and metadata/etcd_watch.c: endpoint
 * selection and the curl settings every etcd transfer uses.
 */
#ifndef SL_METADATA_ETCD_INT_H
#define SL_METADATA_ETCD_INT_H

#include <curl/curl.h>

#include "metadata/etcd.h"

/* Number of endpoints (>= 1) and the base URL of endpoint i. */
size_t sl_etcd_endpoint_count_(const sl_etcd *c);
const char *sl_etcd_endpoint_(const sl_etcd *c, size_t i);

/* Index of the endpoint to try first. */
size_t sl_etcd_preferred_(sl_etcd *c);

/* Endpoint i failed to connect: prefer the next one (if i was preferred). */
void sl_etcd_endpoint_failed_(sl_etcd *c, size_t i);

const sl_etcd_opts *sl_etcd_opts_(const sl_etcd *c);

/*
 * Applies the settings shared by all transfers to a fresh easy handle: no
 * signals, no proxy from the environment, JSON content type, no
 * "Expect: 100-continue", TCP keep-alive. `headers` receives the header list
 * the handle now points at; free it with curl_slist_free_all after the
 * handle. Returns false if curl refused an option (out of memory).
 */
bool sl_etcd_setup_handle_(CURL *h, struct curl_slist **headers);

/* Initialises libcurl once per process (thread-safe). */
void sl_etcd_global_init_(void);


#endif
