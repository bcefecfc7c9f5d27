/* libsluice admin calls (sluice.h): thin wrappers over the broker's admin
 * RPCs, which it forwards to the metadata service. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.slrpc.h"
#include "client/client_int.h"
#include "client/pb_json.h"

void sl_strings_free(sl_strings *s) {
  if (s == NULL) return;
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
  s->v = NULL;
  s->n = 0;
}

static sl_status strings_add(sl_strings *s, const char *v) {
  char **n = realloc(s->v, (s->n + 1) * sizeof(*n));
  if (n == NULL) return SL_ENOMEM;
  s->v = n;
  if ((s->v[s->n] = strdup(v)) == NULL) return SL_ENOMEM;
  s->n++;
  return SL_OK;
}

/* The broker channel and call options every admin call uses. */
static sl_status setup(sl_client *c, sl_rpc_channel **ch, sl_rpc_call_opts *o, sl_err *err) {
  *o = sl_client_call_opts(c);
  return sl_client_channel(c, NULL, ch, err);
}

#define FREE_MSG(m) protobuf_c_message_free_unpacked(&(m)->base, NULL)

sl_status sl_admin_topic_create(sl_client *c, const char *name, uint32_t partitions,
                                sl_err *err) {
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = sl_topic_name_check(name, err);
  if (st == SL_OK) st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  req.partitions = partitions;
  Sluice__V1__TopicInfo *r = NULL;
  st = sl_broker_service_create_topic(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "topic %s", name);
  FREE_MSG(r);
  return SL_OK;
}

sl_status sl_admin_topic_delete(sl_client *c, const char *name, sl_err *err) {
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = sl_topic_name_check(name, err);
  if (st == SL_OK) st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__DeleteTopicResponse *r = NULL;
  st = sl_broker_service_delete_topic(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "topic %s", name);
  FREE_MSG(r);
  sl_client_forget(c, name);
  return SL_OK;
}

sl_status sl_admin_topic_terminate(sl_client *c, const char *name, sl_msg_id **last_ids,
                                   size_t *n, sl_err *err) {
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = sl_topic_name_check(name, err);
  if (st == SL_OK) st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__TerminateTopicRequest req = SLUICE__V1__TERMINATE_TOPIC_REQUEST__INIT;
  req.topic = (char *)name;
  Sluice__V1__TerminateTopicResponse *r = NULL;
  st = sl_broker_service_terminate_topic(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "topic %s", name);
  if (last_ids != NULL) {
    *last_ids = calloc(r->n_last_ids + 1, sizeof(**last_ids));
    if (*last_ids == NULL) {
      FREE_MSG(r);
      return sl_err_set(err, SL_ENOMEM, "terminate: out of memory");
    }
    for (size_t i = 0; i < r->n_last_ids; i++) {
      const Sluice__V1__MessageId *id = r->last_ids[i];
      (*last_ids)[i] = (sl_msg_id){id->ledger_id, id->entry_id, id->batch_index,
                                   id->batch_size, id->partition};
    }
  }
  if (n != NULL) *n = r->n_last_ids;
  FREE_MSG(r);
  return SL_OK;
}

sl_status sl_admin_topic_list(sl_client *c, const char *ns, sl_strings *out,
                              uint32_t **partitions, sl_err *err) {
  memset(out, 0, sizeof(*out));
  if (partitions) *partitions = NULL;
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__ListTopicsRequest req = SLUICE__V1__LIST_TOPICS_REQUEST__INIT;
  req.namespace_ = (char *)ns;
  Sluice__V1__ListTopicsResponse *r = NULL;
  st = sl_broker_service_list_topics(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "namespace %s", ns);
  uint32_t *parts = calloc(r->n_topics + 1, sizeof(*parts));
  if (parts == NULL) st = SL_ENOMEM;
  for (size_t i = 0; st == SL_OK && i < r->n_topics; i++) {
    parts[i] = r->topics[i]->partitions;
    st = strings_add(out, r->topics[i]->name);
  }
  FREE_MSG(r);
  if (st != SL_OK) {
    free(parts);
    sl_strings_free(out);
    return sl_err_set(err, st, "namespace %s: out of memory", ns);
  }
  if (partitions) *partitions = parts;
  else free(parts);
  return SL_OK;
}

/* Appends `piece` to the heap string *acc. */
static sl_status cat(char **acc, const char *piece) {
  size_t a = *acc ? strlen(*acc) : 0, b = strlen(piece);
  char *n = realloc(*acc, a + b + 1);
  if (n == NULL) return SL_ENOMEM;
  memcpy(n + a, piece, b + 1);
  *acc = n;
  return SL_OK;
}

sl_status sl_admin_topic_stats(sl_client *c, const char *name, char **json, sl_err *err) {
  *json = NULL;
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = sl_topic_name_check(name, err);
  if (st == SL_OK) st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__GetTopicRequest g = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
  g.name = (char *)name;
  Sluice__V1__TopicInfo *info = NULL;
  st = sl_broker_service_get_topic(ch, &g, &info, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "topic %s", name);
  uint32_t n = info->partitions;
  FREE_MSG(info);
  char *acc = NULL;
  st = cat(&acc, "[");
  for (uint32_t i = 0; st == SL_OK && i < (n ? n : 1); i++) {
    char part[600];
    if (n) snprintf(part, sizeof(part), "%s-partition-%u", name, i);
    else snprintf(part, sizeof(part), "%s", name);
    Sluice__V1__TopicStatsRequest req = SLUICE__V1__TOPIC_STATS_REQUEST__INIT;
    req.topic = part;
    Sluice__V1__TopicStats *r = NULL;
    st = sl_broker_service_get_topic_stats(ch, &req, &r, &o, err);
    if (st != SL_OK) {
      sl_err_wrap(err, st, "topic %s", part);
      break;
    }
    char *one = NULL;
    st = sl_pb_json(&r->base, &one, err);
    FREE_MSG(r);
    if (st == SL_OK && i) st = cat(&acc, ",");
    if (st == SL_OK) st = cat(&acc, one);
    free(one);
  }
  if (st == SL_OK) st = cat(&acc, "]");
  if (st != SL_OK) {
    free(acc);
    if (st == SL_ENOMEM) sl_err_set(err, st, "stats: out of memory");
    return st;
  }
  *json = acc;
  return SL_OK;
}

sl_status sl_admin_namespace_create(sl_client *c, const char *name, sl_err *err) {
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__NamespacePolicies pol = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  req.policies = &pol;
  Sluice__V1__Namespace *r = NULL;
  st = sl_broker_service_create_namespace(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "namespace %s", name);
  FREE_MSG(r);
  return SL_OK;
}

sl_status sl_admin_namespace_list(sl_client *c, sl_strings *out, sl_err *err) {
  memset(out, 0, sizeof(*out));
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__ListNamespacesRequest req = SLUICE__V1__LIST_NAMESPACES_REQUEST__INIT;
  Sluice__V1__ListNamespacesResponse *r = NULL;
  st = sl_broker_service_list_namespaces(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "namespaces");
  for (size_t i = 0; st == SL_OK && i < r->n_namespaces; i++)
    st = strings_add(out, r->namespaces[i]->name);
  FREE_MSG(r);
  if (st != SL_OK) {
    sl_strings_free(out);
    return sl_err_set(err, st, "namespaces: out of memory");
  }
  return SL_OK;
}

/* Sets one scalar field of `pol` from "key=value". */
static sl_status set_policy(Sluice__V1__NamespacePolicies *pol, const char *kv, sl_err *err) {
  const char *eq = strchr(kv, '=');
  if (eq == NULL || eq == kv)
    return sl_err_set(err, SL_EINVAL, "policy %s: expected KEY=VALUE", kv);
  char key[128];
  snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
  const char *val = eq + 1;
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(pol->base.descriptor, key);
  if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED)
    return sl_err_set(err, SL_EINVAL,
                      "policy %s: unknown key; see `sluice namespace policies NAME` for the keys",
                      key);
  void *v = (char *)pol + f->offset;
  char *end = NULL;
  errno = 0;
  switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
      if (strcmp(val, "true") && strcmp(val, "false"))
        return sl_err_set(err, SL_EINVAL, "policy %s: expected true or false", key);
      *(protobuf_c_boolean *)v = strcmp(val, "true") == 0;
      return SL_OK;
    case PROTOBUF_C_TYPE_UINT32: {
      unsigned long long x = strtoull(val, &end, 10);
      if (*val == '-' || *end || end == val || errno || x > UINT32_MAX) break;
      *(uint32_t *)v = (uint32_t)x;
      return SL_OK;
    }
    case PROTOBUF_C_TYPE_INT64: {
      long long x = strtoll(val, &end, 10);
      if (*end || end == val || errno) break;
      *(int64_t *)v = x;
      return SL_OK;
    }
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, val);
      if (e == NULL) break;
      *(int *)v = e->value;
      return SL_OK;
    }
    default: break;
  }
  return sl_err_set(err, SL_EINVAL, "policy %s: bad value %s", key, val);
}

/* Changes one namespace's policies: read them, let edit() change them, write
 * them back guarded by the version read (again on a race), and return the
 * result as JSON. edit == NULL only reads. edit may point fields of pol at
 * its own memory, and undo() puts them back before pol is freed. */
typedef struct policy_edit {
  sl_status (*edit)(struct policy_edit *pe, Sluice__V1__NamespacePolicies *pol, sl_err *err);
  void (*undo)(struct policy_edit *pe, Sluice__V1__NamespacePolicies *pol);
} policy_edit;

static sl_status update_policies(sl_client *c, const char *name, policy_edit *pe, char **json,
                                 sl_err *err) {
  *json = NULL;
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  for (int attempt = 0;; attempt++) {
    Sluice__V1__GetNamespaceRequest g = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
    g.name = (char *)name;
    Sluice__V1__Namespace *ns = NULL;
    st = sl_broker_service_get_namespace(ch, &g, &ns, &o, err);
    if (st != SL_OK) return sl_err_wrap(err, st, "namespace %s", name);
    if (pe == NULL) {
      st = sl_pb_json(ns->policies ? &ns->policies->base : &ns->base, json, err);
      FREE_MSG(ns);
      return st;
    }
    Sluice__V1__NamespacePolicies empty = SLUICE__V1__NAMESPACE_POLICIES__INIT;
    Sluice__V1__NamespacePolicies *pol = ns->policies ? ns->policies : &empty;
    st = pe->edit(pe, pol, err);
    Sluice__V1__Namespace *r = NULL;
    if (st == SL_OK) {
      Sluice__V1__SetNamespacePoliciesRequest req =
          SLUICE__V1__SET_NAMESPACE_POLICIES_REQUEST__INIT;
      req.name = (char *)name;
      req.policies = pol;
      req.expected_version = ns->version;
      st = sl_broker_service_set_namespace_policies(ch, &req, &r, &o, err);
    }
    if (pe->undo != NULL) pe->undo(pe, pol);
    FREE_MSG(ns);
    if (st == SL_EVERSION && attempt < 5) continue; /* changed meanwhile: apply again */
    if (st != SL_OK) return sl_err_wrap(err, st, "namespace %s", name);
    st = sl_pb_json(r->policies ? &r->policies->base : &r->base, json, err);
    FREE_MSG(r);
    return st;
  }
}

typedef struct set_edit {
  policy_edit pe;
  const char *const *set;
  size_t n;
} set_edit;

static sl_status apply_set(policy_edit *pe, Sluice__V1__NamespacePolicies *pol, sl_err *err) {
  set_edit *se = (set_edit *)pe;
  sl_status st = SL_OK;
  for (size_t i = 0; st == SL_OK && i < se->n; i++) st = set_policy(pol, se->set[i], err);
  return st;
}

sl_status sl_admin_namespace_policies(sl_client *c, const char *name, const char *const *set,
                                      size_t n_set, char **json, sl_err *err) {
  set_edit se = {{apply_set, NULL}, set, n_set};
  return update_policies(c, name, n_set > 0 ? &se.pe : NULL, json, err);
}

/* The role's entry is replaced by ours (or dropped when it holds no
 * action); the others are borrowed from the policies read. */
typedef struct grant_edit {
  policy_edit pe;
  const char *role;
  Sluice__V1__Action actions[3];
  size_t n_actions;
  Sluice__V1__Permission mine;
  Sluice__V1__Permission **list, **saved;
  size_t n_saved;
} grant_edit;

static sl_status apply_grant(policy_edit *pe, Sluice__V1__NamespacePolicies *pol, sl_err *err) {
  grant_edit *ge = (grant_edit *)pe;
  ge->saved = pol->permissions;
  ge->n_saved = pol->n_permissions;
  ge->list = calloc(pol->n_permissions + 1, sizeof(*ge->list));
  if (ge->list == NULL) return sl_err_set(err, SL_ENOMEM, "grant: out of memory");
  size_t n = 0;
  for (size_t i = 0; i < pol->n_permissions; i++)
    if (strcmp(pol->permissions[i]->role, ge->role) != 0) ge->list[n++] = pol->permissions[i];
  if (ge->n_actions > 0) ge->list[n++] = &ge->mine;
  pol->permissions = ge->list;
  pol->n_permissions = n;
  return SL_OK;
}

static void undo_grant(policy_edit *pe, Sluice__V1__NamespacePolicies *pol) {
  grant_edit *ge = (grant_edit *)pe;
  if (ge->list == NULL) return;
  pol->permissions = ge->saved;
  pol->n_permissions = ge->n_saved;
  free(ge->list);
  ge->list = NULL;
}

/* "produce,consume" -> actions; "" holds none. */
static sl_status parse_actions(const char *s, grant_edit *ge, sl_err *err) {
  static const struct { const char *name; Sluice__V1__Action a; } names[] = {
      {"produce", SLUICE__V1__ACTION__ACTION_PRODUCE},
      {"consume", SLUICE__V1__ACTION__ACTION_CONSUME},
      {"admin", SLUICE__V1__ACTION__ACTION_ADMIN},
  };
  ge->n_actions = 0;
  while (s != NULL && *s != '\0') {
    size_t len = strcspn(s, ",");
    size_t k = 0;
    while (k < 3 && (strlen(names[k].name) != len || strncmp(s, names[k].name, len) != 0)) k++;
    if (k == 3)
      return sl_err_set(err, SL_EINVAL, "action %.*s: expected produce, consume or admin",
                        (int)len, s);
    bool dup = false;
    for (size_t i = 0; i < ge->n_actions; i++) dup |= ge->actions[i] == names[k].a;
    if (!dup) ge->actions[ge->n_actions++] = names[k].a;
    s += len;
    if (*s == ',') s++;
  }
  return SL_OK;
}

sl_status sl_admin_namespace_grant(sl_client *c, const char *name, const char *role,
                                   const char *actions, char **json, sl_err *err) {
  *json = NULL;
  if (role == NULL || role[0] == '\0') return sl_err_set(err, SL_EINVAL, "grant: empty role");
  grant_edit ge = {.pe = {apply_grant, undo_grant}, .role = role};
  sl_status st = parse_actions(actions, &ge, err);
  if (st != SL_OK) return st;
  Sluice__V1__Permission init = SLUICE__V1__PERMISSION__INIT;
  ge.mine = init;
  ge.mine.role = (char *)role;
  ge.mine.actions = ge.actions;
  ge.mine.n_actions = ge.n_actions;
  return update_policies(c, name, &ge.pe, json, err);
}

sl_status sl_admin_cluster_status(sl_client *c, char **json, sl_err *err) {
  *json = NULL;
  sl_rpc_channel *ch;
  sl_rpc_call_opts o;
  sl_status st = setup(c, &ch, &o, err);
  if (st != SL_OK) return st;
  Sluice__V1__ClusterStatusRequest req = SLUICE__V1__CLUSTER_STATUS_REQUEST__INIT;
  Sluice__V1__ClusterStatusResponse *r = NULL;
  st = sl_broker_service_cluster_status(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "cluster status");
  st = sl_pb_json(&r->base, json, err);
  FREE_MSG(r);
  return st;
}
