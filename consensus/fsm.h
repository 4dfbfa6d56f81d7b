/* fsm: the deterministic state machine: applies one Command to LMDB in one transaction.
 *
 * Apply reads no clock, no randomness and nothing node-local: every value comes from
 * the command (Command.time is the proposer's clock). The same log therefore gives
 * the same state on every node. Each apply commits, in the same LMDB transaction,
 * the command's effects, the raft index as meta/applied_index, and (for a non-empty
 * request id) a RequestRecord; a command whose request id is already recorded
 * changes nothing and returns the recorded outcome (idempotent retries after
 * LEADERSHIPLOST or a client retry).
 *
 * A command that is valid protobuf but breaks a rule (name exists as deleted, too
 * many versions, unknown key, a role rule of consensus/rbac) is a deterministic,
 * recorded failure: result.rc < 0, nothing else changes.
 *
 * Role commands (PutRoleDefinition, DeleteRoleDefinition, PutRoleAssignment,
 * DeleteRoleAssignment; MH_ENOTACTIVE before activation) trust nothing the proposer
 * checked: malformed records (GUIDs not lower-case, bad principal, scope or action
 * pattern, empty dataActions, over-long fields) are MH_EPROTO. Outcomes:
 * MH_EBUILTIN (a built-in id), MH_EEXIST (role name taken, case-insensitively, by a
 * built-in or another custom role; assignment name taken by a different assignment;
 * the same principal, role and scope under another name), MH_ENOTFOUND (unknown
 * definition or assignment, or an assignment naming an unknown role), MH_EINUSE (a
 * definition still assigned), MH_ELIMIT (max_custom_roles, max_hsm_scope,
 * max_per_key; 0 means no limit), MH_ELOCKOUT (a change that removes a grant of
 * roleAssignments/write at "/" or "/keys" and leaves none). An identical repeated
 * PutRoleAssignment succeeds without change. Activate stores its initial
 * assignments (built-in roles only, no limits; a repeated principal/role/scope is
 * stored once). result.name is the definition id or assignment name. Only LMDB failures are
 * returned as errors from mh_fsm_apply itself (the node must then stop: its state would diverge).
 *
 * Loop thread only. */
#ifndef MH_CONSENSUS_FSM_H
#define MH_CONSENSUS_FSM_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "consensus/store.h"

#define MH_FSM_MAX_COMMAND (4u << 20) /* larger entries are refused before unpacking */

struct mh_fsm_result {
    int rc;           /* 0 or a negative MH_E* outcome of the command */
    char name[128];   /* the key, role definition id or assignment name ("" if none) */
    char version[33]; /* AddKeyVersion / UpdateKeyVersion: the version ("" if none) */
};

/* Called after every successful commit (loop thread), e.g. to evict cached keys on
 * purge. |cmd| is the decoded command as applied (the FSM fills in record fields
 * such as created/updated/activated_at), |res| its outcome. Called for failed and
 * duplicate (already recorded request id) commands too; not for skipped indexes or
 * entries that did not decode. Both pointers are valid only during the call.
 * After a snapshot restore replaced the whole state it is called once with both
 * NULL. */
typedef void (*mh_fsm_hook)(void *arg, const Mhsm__Internal__Command *cmd,
                            const struct mh_fsm_result *res);

struct mh_fsm;

MH_MUST_USE int mh_fsm_new(struct mh_store *store, struct mh_fsm **out);
void mh_fsm_free(struct mh_fsm *fsm);
void mh_fsm_set_hook(struct mh_fsm *fsm, mh_fsm_hook hook, void *arg);

/* mh_fsm_apply applies the packed Command in |buf| as raft entry |index|. Malformed
 * or oversized entries are recorded failures (result.rc = MH_EPROTO), not errors:
 * bytes that do not unpack (or unpack into more than 16x their size plus 64 KiB),
 * format != 1, no known body, a request id over MH_STORE_REQUEST_ID_MAX bytes, a
 * missing record, or a name/version outside the MH_STORE_* bounds and charset.
 * Entries with index <= the applied index are skipped (result.rc = 0, nothing
 * written). Rule failures are checked in a nested transaction, so a failing command
 * never leaves partial effects. |result| is always filled.
 * Errors (the entry is NOT applied; the caller must stop): MH_ESTORE, MH_ENOMEM,
 * MH_ECORRUPT (stored record unreadable). */
MH_MUST_USE int mh_fsm_apply(struct mh_fsm *fsm, uint64_t index, const uint8_t *buf, size_t len,
                             struct mh_fsm_result *result);

/* Logical snapshot of the whole state (every database, every record, the applied
 * index) into |out| (malloc'd, caller frees) and restore from one. Restore replaces
 * the state in one transaction. Errors: MH_ESTORE, MH_ECORRUPT (bad snapshot).
 *
 * Format (version 2): "MHSMSNAP", u32be version (2), u32be database count (5), then
 * per database in mh_store_db order a u64be record count and the records in key
 * order, each u32be key length, key, u32be value length, value; then SHA-256 of
 * everything before it. The same state always gives the same bytes, so snapshots of
 * two nodes can be compared. Restore checks the digest, every length and the key
 * order before the transaction commits. Restore also accepts version 1 (the same
 * layout with 4 databases, from before RBAC, still held by older data dirs): the
 * rbac database is then empty. Snapshots are always written as version 2. */
MH_MUST_USE int mh_fsm_snapshot(struct mh_fsm *fsm, uint8_t **out, size_t *len);
MH_MUST_USE int mh_fsm_restore(struct mh_fsm *fsm, const uint8_t *buf, size_t len);

/* The same snapshot in three steps, so that serializing a large state does not hold
 * the loop (raft_fsm version 3): begin (loop thread, between applies) takes a
 * consistent read view of the state as applied so far; write (any one thread, while
 * applies go on) serializes that view exactly as mh_fsm_snapshot would have at begin;
 * end (loop thread) releases the view. Every begin that succeeded needs one end.
 * Errors: MH_ESTORE, MH_ENOMEM. */
struct mh_fsm_snap;
MH_MUST_USE int mh_fsm_snapshot_begin(struct mh_fsm *fsm, struct mh_fsm_snap **out);
MH_MUST_USE int mh_fsm_snapshot_write(struct mh_fsm_snap *s, uint8_t **out, size_t *len);
void mh_fsm_snapshot_end(struct mh_fsm_snap *s);

#endif
