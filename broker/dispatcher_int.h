/* Dispatcher internals shared by dispatcher.c (consumers, permits, unacked
 * messages) and the per-type files (dispatcher_single.c, _shared.c,
 * _key_shared.c). See dispatcher.h for the design note. */
#ifndef SL_BROKER_DISPATCHER_INT_H
#define SL_BROKER_DISPATCHER_INT_H

#include "broker/dispatcher.h"
#include "common/map.h"

typedef struct dconsumer {
  struct dconsumer *next;   /* d->consumers, in arrival order */
  uint64_t id;
  char *name;
  uint32_t priority;
  int64_t ack_timeout_ms;
  uint64_t arrival;         /* tie-break after priority and name */
  uint64_t permits;
  uint64_t unacked;
} dconsumer;

/* One delivered, not yet acked message (value of d->unacked). */
typedef struct dunacked {
  sl_msg_id id;
  dconsumer *c;
  uint64_t key_hash;
  int64_t delivered_ms;
} dunacked;

/* What differs between subscription types. Every hook runs on the
 * dispatcher's caller's thread; NULL hooks do nothing. */
typedef struct disp_ops {
  /* May refuse a joiner (exclusive). */
  sl_status (*admit)(sl_disp *d, const sl_disp_consumer *c, sl_err *err);
  /* After c joined / before c leaves (c still listed, its unacked already
   * handed back). back hands back messages of a consumer that stops being
   * active. */
  void (*joined)(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg);
  void (*leaving)(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg);
  /* The consumer for m (hash of its key), or NULL: wait. Only consumers
   * with permits may be returned. */
  dconsumer *(*choose)(sl_disp *d, const sl_disp_msg *m, uint64_t key_hash);
  /* A message of key_hash was placed at c / is no longer unacked at c. */
  void (*placed)(sl_disp *d, dconsumer *c, uint64_t key_hash);
  void (*forgotten)(sl_disp *d, dconsumer *c, uint64_t key_hash);
  bool (*can_dispatch)(const sl_disp *d);
  void (*release_impl)(sl_disp *d);
} disp_ops;

struct sl_disp {
  sl_disp_type type;
  const disp_ops *ops;
  void *impl;               /* the type's own state */
  char *subscription;
  sl_disp_active_cb on_active;
  void *active_arg;
  dconsumer *consumers;     /* arrival order */
  uint32_t n_consumers;
  uint64_t arrivals;
  sl_map unacked;           /* msg_key() -> dunacked */
};

extern const disp_ops sl_disp_exclusive_ops;
extern const disp_ops sl_disp_failover_ops;
extern const disp_ops sl_disp_shared_ops;
extern const disp_ops sl_disp_key_shared_ops;

/* Hands back every unacked message of c, in id order (dispatcher.c). */
void disp_hand_back_consumer(sl_disp *d, dconsumer *c, sl_disp_back_cb back,
                             void *arg);

/* 64-bit hash of a key (FNV-1a with a final mix). */
uint64_t disp_hash(const char *key, size_t len);

/* The better of two consumers: lower priority level, then name, then the
 * earlier arrival. */
bool disp_consumer_before(const dconsumer *a, const dconsumer *b);

#endif
