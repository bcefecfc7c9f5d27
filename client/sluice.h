/*
 * libsluice: the Sluice client library (DESIGN.md §7).
 *
 *   sl_client_opts o = SL_CLIENT_OPTS_INIT;     // url 127.0.0.1:6650
 *   sl_client *c;
 *   sl_client_create(&o, &c, &err);
 *   sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
 *   po.topic = "public/orders";
 *   sl_producer *p;
 *   sl_producer_create(c, &po, &p, &err);
 *   sl_message m = {.payload = "hi", .len = 2};
 *   sl_producer_send(p, &m, &id, &err);          // blocks until durable
 *   sl_producer_destroy(p);                      // flushes first
 *   sl_client_destroy(c);
 *
 * Ownership
 *   Everything passed in (options, strings, messages) is borrowed for the
 *   call and copied when kept. Objects returned through an out-parameter
 *   belong to the caller, who frees them with the matching _destroy/_free.
 *   A client outlives its producers and consumers.
 *
 * Threads
 *   Every function may be called from any thread. Each partition of a
 *   producer or consumer has one thread of its own that receives from the
 *   broker; send callbacks (sl_send_cb) and consumer callbacks
 *   (sl_consumer_opts.on_message) run on it, one at a time per partition,
 *   and must not block for long nor destroy their own producer or consumer.
 *   They may send, ack and nack. A consumer that groups acks (the default)
 *   has one more thread, which sends groups whose time is up and runs no
 *   user code.
 *
 * Failover
 *   When a partition's broker goes away or redirects, the library looks the
 *   partition up again (the cache entry is dropped), reopens its stream and
 *   resends every message not yet acknowledged, with the same sequence ids,
 *   and resubscribes consumers. The application sees no error unless a
 *   message's send timeout passes first. With deduplication on in the
 *   namespace, a resent message that had been stored is answered as the
 *   original (its first id), so it is stored and delivered once.
 *
 * Errors (sl_status, err->msg names the object first)
 *   SL_EINVAL     bad argument or name ("ns/topic" expected), bad option
 *   SL_ENOTFOUND  topic, namespace or subscription does not exist
 *   SL_EEXIST     created twice
 *   SL_EUNAVAIL   no broker reachable at the url within the timeout
 *   SL_ETIMEDOUT  a call or a message's send timeout passed
 *   SL_EBUSY      pending queue full (block_if_full off), or an exclusive
 *                 subscription already has a consumer
 *   SL_ETOOBIG    payload over the topic's limit
 *   SL_ECANCELED  the producer/consumer was destroyed with the call pending
 *   SL_EPRECOND   publishing to a terminated topic
 *   SL_ERANGE     receive: end of a terminated topic
 *   SL_EUNAUTH, SL_EPERM  token missing or not allowed
 *   SL_ENOMEM     out of memory (the library never aborts on it)
 *   Anything else is the broker's own status, passed through.
 */
#ifndef SL_CLIENT_SLUICE_H
#define SL_CLIENT_SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* ------------------------------------------------------------- client */

typedef struct sl_client sl_client;

typedef struct sl_client_opts {
  const char *url;          /* any broker, "host:port"; NULL = env
                               SLUICE_URL, else "127.0.0.1:6650" */
  const char *token;        /* sent as "authorization: Bearer <token>" */
  const char *tls_ca_file;  /* PEM file: use TLS, trust this CA */
  const char *tls_cert_file;/* PEM client certificate (mutual TLS) */
  const char *tls_key_file; /* its key */
  int timeout_ms;           /* each admin call and lookup; 0 = 10000 */
} sl_client_opts;

#define SL_CLIENT_OPTS_INIT {.url = NULL, .timeout_ms = 0}

/* Checks the options and reads the TLS files; connects lazily (the first
 * call that needs a broker reports SL_EUNAVAIL if none answers). */
sl_status sl_client_create(const sl_client_opts *opts, sl_client **out,
                           sl_err *err);
void sl_client_destroy(sl_client *c); /* NULL is a no-op */

/* The url in use (after the env and default). */
const char *sl_client_url(const sl_client *c);

/* Topic names are "namespace/topic": letters, digits and "-_." on each
 * side. SL_OK or SL_EINVAL with a message saying why. */
sl_status sl_topic_name_check(const char *name, sl_err *err);

/* ------------------------------------------------------------- lookup */

typedef struct sl_lookup {
  uint32_t partitions;      /* 0 = non-partitioned */
  size_t n;                 /* owners (1 or partitions) */
  char **partition;         /* partition names, by index */
  char **address;           /* owner broker address, by index */
} sl_lookup;

/* Owners of a topic's partitions (cached; `refresh` asks a broker again).
 * *out is the caller's: sl_lookup_free(). */
sl_status sl_client_lookup(sl_client *c, const char *topic, bool refresh,
                           sl_lookup *out, sl_err *err);
void sl_lookup_free(sl_lookup *l);

/* ------------------------------------------------------------ messages */

typedef struct sl_msg_id {
  uint64_t ledger_id;
  int64_t entry_id;
  int32_t batch_index;
  int32_t batch_size;
  int32_t partition;        /* -1 for a non-partitioned topic */
} sl_msg_id;

typedef struct sl_property {
  const char *key;
  const char *value;
} sl_property;

/* A message to send (all borrowed). */
typedef struct sl_message {
  const void *payload;
  size_t len;
  const char *key;          /* routing key; NULL = none */
  const sl_property *props;
  size_t n_props;
} sl_message;

/* A received message; free with sl_received_free(). */
typedef struct sl_received {
  sl_msg_id id;
  uint8_t *payload;
  size_t len;
  char *key;                /* "" if none */
  sl_property *props;       /* heap strings */
  size_t n_props;
  int64_t publish_time_ms;
  uint32_t redelivery_count;
  char *topic;              /* the partition it came from */
} sl_received;

void sl_received_free(sl_received *m); /* NULL is a no-op */

/* ----------------------------------------------------------- producer */

typedef struct sl_producer sl_producer;

typedef struct sl_producer_opts {
  const char *topic;        /* "ns/topic" (all partitions) */
  const char *name;         /* unique per topic; NULL = generated. Dedup
                               needs the same name across restarts */
  int send_timeout_ms;      /* a message not acked by then fails with
                               SL_ETIMEDOUT; 0 = 30000, < 0 = never */
  int max_pending;          /* messages sent and not acked; 0 = 1000 */
  bool block_if_full;       /* full: block (true) or SL_EBUSY (false) */
  int batch_max;            /* messages per batch at most, 1..512;
                               0 = 128 */
  int batch_delay_us;       /* longest a message waits for others to share
                               its batch (see Batching); 0 = 1000 (1 ms,
                               Pulsar's default), < 0 = send at once;
                               at most 10 s */
} sl_producer_opts;

#define SL_PRODUCER_OPTS_INIT {.topic = NULL, .block_if_full = true}

/* Batching
 *   Each partition's thread sends the messages queued for it in batches:
 *   one stream message, one stored entry and one receipt for many messages,
 *   which is what lets a producer sending at a steady rate do so cheaply
 *   (without it every message costs its own request, broker wakeup and
 *   receipt). A queued message waits on that thread, never in the caller,
 *   until one of these sends its batch:
 *     - batch_max messages, or 256 KiB of payload, keys and properties, are
 *       waiting (a larger message goes alone);
 *     - the oldest waiting message has waited batch_delay_us;
 *     - the partition is idle: no receipt outstanding and nothing sent
 *       for batch_delay_us. The first message after a pause goes at once;
 *       a steady stream batches as above. (sluice-perf e2e on 2 vCPUs, at
 *       0-0.3% steal: at 200 msgs/s the p50 went from 2.6 to 1.3 ms and the
 *       machine's busy share from 27% to 16%, the 1 ms timer wakeups
 *       gone; at 1k msgs/s 2.4 to 2.1 ms and 58% to 49%; at 5k msgs/s no
 *       difference beyond run-to-run noise in 9 interleaved pairs.)
 *     - sl_producer_send (sync: nothing else would join it from its
 *       thread), sl_producer_flush and sl_producer_destroy: everything
 *       waiting goes at once;
 *     - after a reconnect, the messages sent again go at once.
 *   The cost: a message that follows others within batch_delay_us waits
 *   up to that long for company (up to 1 ms by default); a sender that
 *   needs each message out at once sets batch_delay_us < 0 (or uses the
 *   sync send).
 *   The gain: the cluster's cost is mostly per stored entry, not per byte.
 *   At 5k msgs/s of 1 KiB on one partition, with the whole cluster and the
 *   load on 2 vCPUs, a 3 ms delay left 42-46% of the CPU idle where 1 ms
 *   left 17-19% (sluice-perf e2e --batch-delay-us, with the load generator
 *   waking once per message, as --pace-us 0 does now). A busy producer on a
 *   small cluster may want a longer delay than the default. */

/* One message's outcome: SL_OK with its id, or why it failed. Runs exactly
 * once per accepted message, on the partition's thread (see Threads). */
typedef void (*sl_send_cb)(sl_status st, const sl_msg_id *id, void *arg);

/* Looks the topic up and opens a stream per partition. */
sl_status sl_producer_create(sl_client *c, const sl_producer_opts *opts,
                             sl_producer **out, sl_err *err);

/* Queues one message (copied) and returns; cb reports the outcome. Routes
 * by key hash, else round-robin over partitions: with batching on, by time
 * (every unkeyed message of a window of 10 batch delays goes to one
 * partition, the next window's to the next, so batches stay full, as in
 * Pulsar); with batching off, message by message. SL_EBUSY when the
 * pending queue is full and block_if_full is off; then cb does not run. */
sl_status sl_producer_send_async(sl_producer *p, const sl_message *m,
                                 sl_send_cb cb, void *arg, sl_err *err);

/* Sends and waits for the outcome; *id (may be NULL) on SL_OK. */
sl_status sl_producer_send(sl_producer *p, const sl_message *m, sl_msg_id *id,
                           sl_err *err);

/* Sends what is waiting for a batch at once, and waits until nothing is
 * pending (every callback has run). */
sl_status sl_producer_flush(sl_producer *p, sl_err *err);

/* Messages the broker answered as duplicates (dedup) since create. */
uint64_t sl_producer_duplicates(const sl_producer *p);

/* Flushes (up to each message's send timeout), then closes. Callbacks of
 * messages still pending get SL_ECANCELED. */
void sl_producer_destroy(sl_producer *p);

/* ----------------------------------------------------------- consumer */

typedef struct sl_consumer sl_consumer;

typedef enum sl_sub_type {
  SL_SUB_EXCLUSIVE = 0,
  SL_SUB_FAILOVER = 1,
  SL_SUB_SHARED = 2,
  SL_SUB_KEY_SHARED = 3,
} sl_sub_type;

/* Callback mode: owns m (free it with sl_received_free). */
typedef void (*sl_message_cb)(sl_consumer *c, sl_received *m, void *arg);

typedef struct sl_consumer_opts {
  const char *topic;        /* "ns/topic": every partition, merged */
  const char *subscription;
  sl_sub_type type;
  const char *name;         /* consumer name; NULL = generated */
  bool from_earliest;       /* a new subscription starts at the oldest
                               message (else after the newest) */
  int receiver_queue;       /* permits per partition; 0 = 1000 */
  int ack_timeout_ms;       /* broker redelivers unacked; 0 = never */
  int ack_group_us;         /* longest an ack waits to go with others of
                               its partition (see Ack grouping); 0 = 10000
                               (10 ms), < 0 = each ack at once; at most
                               10 s */
  sl_message_cb on_message; /* NULL = use sl_consumer_receive() */
  void *arg;
} sl_consumer_opts;

#define SL_CONSUMER_OPTS_INIT \
  {.topic = NULL, .type = SL_SUB_EXCLUSIVE, .on_message = NULL}

/* Ack grouping
 *   sl_consumer_ack and sl_consumer_ack_cumulative return once the ack is
 *   grouped with others of its partition; the group goes to the broker as
 *   one request when 256 acks wait or the oldest has waited ack_group_us
 *   (a consumer thread's timer), and at once before an ack with receipt
 *   (sl_consumer_ack_sync), a nack, a seek, and when the consumer is
 *   destroyed (destroy sends the group before it closes the stream, so a
 *   consumer that acks and then destroys leaves nothing acked to
 *   redeliver). Acks keep their order; a cumulative ack replaces a grouped
 *   one only where the broker would do exactly the same with or without
 *   it (an earlier cumulative ack of the same entry).
 *   The default, 10 ms, turns the acks of a consumer taking 5000 msgs/s
 *   into about one request per 50 instead of 50, and is small beside what
 *   already delays an ack's durability: the broker persists cursors about
 *   every 100 ms.
 *   At-least-once consequence: an ack still grouped when the process dies
 *   without destroy, or when the partition's stream breaks and the
 *   consumer is destroyed before it resubscribes, never reaches the
 *   broker, and its message is delivered again (a broken stream otherwise
 *   sends the group first on the next one). An application that must know
 *   an ack is durable uses sl_consumer_ack_sync. */

/* Subscribes on every partition; returns once each is subscribed.
 * SL_ENOTFOUND: no such topic. SL_EBUSY: exclusive and taken. */
sl_status sl_consumer_create(sl_client *c, const sl_consumer_opts *opts,
                             sl_consumer **out, sl_err *err);

/* Next message, waiting up to timeout_ms (< 0 = forever): SL_OK with *out
 * (the caller's), or SL_ETIMEDOUT. Taking messages grants permits back.
 * End of topic: once the topic is terminated (sl_admin_topic_terminate) and
 * every partition's broker has sent this subscription all its messages,
 * receive returns SL_ERANGE ("end of topic") as soon as the queue is empty,
 * and keeps doing so (a seek starts reading again). */
sl_status sl_consumer_receive(sl_consumer *c, int timeout_ms, sl_received **out,
                              sl_err *err);

/* True once every partition reached end of topic (as above); for callback
 * mode, where receive is not used. */
bool sl_consumer_at_end(sl_consumer *c);

/* Acks one message; with a cumulative ack, everything up to it on its
 * partition (exclusive and failover only: SL_EINVAL otherwise). Grouped
 * (see Ack grouping), then sent; SL_EUNAVAIL while the partition
 * reconnects, or when 256 grouped acks could not be sent (the message is
 * then redelivered). */
sl_status sl_consumer_ack(sl_consumer *c, const sl_msg_id *id, sl_err *err);
sl_status sl_consumer_ack_cumulative(sl_consumer *c, const sl_msg_id *id,
                                     sl_err *err);
/* Sends the partition's grouped acks, then acks this one and waits until
 * the broker has made it durable (AckReceipt), up to the client's
 * timeout. */
sl_status sl_consumer_ack_sync(sl_consumer *c, const sl_msg_id *id, sl_err *err);
/* Asks for redelivery (after the partition's grouped acks). */
sl_status sl_consumer_nack(sl_consumer *c, const sl_msg_id *id, sl_err *err);
/* Moves the subscription on every partition to the first message published
 * at or after publish_time_ms (0 = the oldest) and waits, up to the
 * client's timeout, until every partition's broker has done it: queued
 * messages are dropped, and whatever receive returns afterwards comes from
 * the new position. SL_ETIMEDOUT if a broker did not confirm in time. */
sl_status sl_consumer_seek(sl_consumer *c, int64_t publish_time_ms, sl_err *err);
/* Moves the subscription on the message's partition to that message (its
 * entry: a seek inside a batch starts at the batch), waiting as above.
 * A seek the broker refuses (e.g. an id not in the partition) returns its
 * status; the consumer carries on, subscribed again. */
sl_status sl_consumer_seek_id(sl_consumer *c, const sl_msg_id *id, sl_err *err);

void sl_consumer_destroy(sl_consumer *c); /* NULL is a no-op */

/* -------------------------------------------------------------- admin */

/* Results are printed by the caller; every list/string is heap and freed
 * with the matching _free. */
typedef struct sl_strings {
  size_t n;
  char **v;
} sl_strings;
void sl_strings_free(sl_strings *s);

sl_status sl_admin_topic_create(sl_client *c, const char *name, uint32_t partitions,
                                sl_err *err);
sl_status sl_admin_topic_delete(sl_client *c, const char *name, sl_err *err);
/* Topics of a namespace as "name" or "name (N partitions)"-free names; the
 * partition counts go to *partitions (heap, may be NULL). */
sl_status sl_admin_topic_list(sl_client *c, const char *ns, sl_strings *out,
                              uint32_t **partitions, sl_err *err);
/* Terminates a topic (every partition): what the brokers accepted is
 * stored, then nothing more can be published (producers get SL_EPRECOND,
 * "terminated"); consumers read on until end of topic. *last_ids (may be
 * NULL; heap, free() it) gets each partition's last entry in index order
 * (entry_id -1: none), *n their count. Terminating again answers the same.
 * SL_ENOTFOUND for an unknown topic. */
sl_status sl_admin_topic_terminate(sl_client *c, const char *name, sl_msg_id **last_ids,
                                   size_t *n, sl_err *err);
/* Stats of every partition of a topic as JSON (heap string). */
sl_status sl_admin_topic_stats(sl_client *c, const char *name, char **json,
                               sl_err *err);
sl_status sl_admin_namespace_create(sl_client *c, const char *name, sl_err *err);
sl_status sl_admin_namespace_list(sl_client *c, sl_strings *out, sl_err *err);
/* Applies "key=value" settings (NULL/0 = none), then returns the policies
 * as JSON. Keys are NamespacePolicies' field names (deduplication,
 * retention_minutes, ...). A changed namespace is retried on a CAS race. */
sl_status sl_admin_namespace_policies(sl_client *c, const char *name,
                                      const char *const *set, size_t n_set,
                                      char **json, sl_err *err);
/* Sets what `role` may do on namespace `name`: `actions` is a
 * comma-separated list of produce, consume and admin, and replaces what the
 * role held ("" or NULL revokes every right). Returns the policies as JSON.
 * Needs the admin right on the namespace. */
sl_status sl_admin_namespace_grant(sl_client *c, const char *name, const char *role,
                                   const char *actions, char **json, sl_err *err);
/* Brokers, bookies and partition owners as JSON. */
sl_status sl_admin_cluster_status(sl_client *c, char **json, sl_err *err);

#endif
