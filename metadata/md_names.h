/*
 * Name rules of the metadata service (DESIGN.md §2). Every name that
 * becomes part of a metadata key is checked here before it reaches the
 * store, so keys stay unambiguous and printable.
 *
 *   namespace      "public"                   one segment
 *   topic          "public/orders"            namespace/segment, <= 255 bytes
 *   partition      "public/orders" or "public/orders-partition-3"
 *   node id        "bookie-0"                 one segment (brokers, bookies)
 *   subscription   "sub-1"                    one segment
 *
 * A segment is 1..255 bytes of ASCII letters, digits, '-', '_' and '.',
 * and is neither "." nor "..". A topic name may not itself end in
 * "-partition-<digits>": that suffix names partitions. Partition indexes
 * are decimal without leading zeros and below SL_MD_MAX_PARTITIONS.
 *
 * Every check returns SL_OK or SL_EINVAL with a message naming the input
 * (quoted, truncated if long). `what` says what the name is ("namespace",
 * "broker id", ...). NULL names are treated as "".
 */
#ifndef SL_METADATA_MD_NAMES_H
#define SL_METADATA_MD_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SL_MD_NAME_MAX 255          /* bytes in a segment or topic name */
#define SL_MD_MAX_PARTITIONS 10000  /* partitions of one topic */
/* Longest partition name: a topic name plus "-partition-9999". */
#define SL_MD_PARTITION_MAX (SL_MD_NAME_MAX + 15)

/* One segment: a namespace, node id, subscription or role name. */
sl_status sl_md_check_segment(const char *what, const char *name, sl_err *err);

/* A namespace name (one segment). */
sl_status sl_md_check_namespace(const char *name, sl_err *err);

/* A topic name "namespace/topic". *ns_len (may be NULL) gets the length of
 * its namespace part. */
sl_status sl_md_check_topic(const char *name, size_t *ns_len, sl_err *err);

/* A partition name: a topic name, optionally followed by
 * "-partition-<index>". *topic_len (may be NULL) gets the length of the
 * topic part, *index (may be NULL) the index or -1 for a plain topic. */
sl_status sl_md_check_partition(const char *name, size_t *topic_len,
                                int64_t *index, sl_err *err);

/* A prefix of partition names for ownership watches: "" or any prefix of a
 * valid partition name, e.g. "public/" or "public/ord". */
sl_status sl_md_check_partition_prefix(const char *prefix, sl_err *err);

/* A "host:port" address a node registers: 1..255 printable ASCII bytes
 * without spaces, ending in ":<port>" with port 1..65535. */
sl_status sl_md_check_address(const char *what, const char *addr, sl_err *err);

/* Free text a node reports (a version string, a rack): at most max bytes of
 * printable ASCII. */
sl_status sl_md_check_text(const char *what, const char *text, size_t max,
                           sl_err *err);

#endif
