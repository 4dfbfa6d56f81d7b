#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int min_level = MH_LOG_INFO;

void mh_log_set_level(enum mh_log_level level)
{
    min_level = (int)level;
}

int mh_log_level_from_name(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void mh_log(enum mh_log_level level, const char *comp, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if ((int)level < min_level || (int)level > MH_LOG_ERROR)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], comp);
    if (n < 0 || (size_t)n >= sizeof line - 2)
        return;
    size_t off = (size_t)n;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + off, sizeof line - off - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t end = off + (size_t)m;
    if (end > sizeof line - 2)
        end = sizeof line - 2;
    for (size_t i = off; i < end; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[end++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, end);
    (void)w;
}
