/* log: structured, line-oriented logs to stderr ("ts=... level=... comp=... msg").
 *
 * One line per call, written with a single write(2) so lines from different
 * threads never interleave. Callers must never pass secrets, plaintext, digests
 * or signatures: log names, ids, sizes and error names only. Thread-safe. */
#ifndef MH_COMMON_LOG_H
#define MH_COMMON_LOG_H

enum mh_log_level { MH_LOG_DEBUG = 0, MH_LOG_INFO = 1, MH_LOG_WARN = 2, MH_LOG_ERROR = 3 };

/* mh_log_set_level sets the minimum level written (default MH_LOG_INFO). */
void mh_log_set_level(enum mh_log_level level);

/* mh_log_level_from_name parses "debug", "info", "warn", "error"; -1 if unknown. */
int mh_log_level_from_name(const char *name);

/* mh_log writes "ts=<RFC3339 UTC ms> level=<l> comp=<comp> <formatted>\n".
 * Lines longer than 2 KiB are truncated; control characters are replaced by '?'. */
void mh_log(enum mh_log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define MH_DEBUG(comp, ...) mh_log(MH_LOG_DEBUG, comp, __VA_ARGS__)
#define MH_INFO(comp, ...)  mh_log(MH_LOG_INFO, comp, __VA_ARGS__)
#define MH_WARN(comp, ...)  mh_log(MH_LOG_WARN, comp, __VA_ARGS__)
#define MH_ERROR(comp, ...) mh_log(MH_LOG_ERROR, comp, __VA_ARGS__)

#endif
