/* net: socket address helpers shared by the listeners. */
#ifndef MH_COMMON_NET_H
#define MH_COMMON_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* mh_net_format writes "1.2.3.4:port" or "[v6]:port" (or "?") into |out|. */
void mh_net_format(const struct sockaddr_storage *ss, char *out, size_t cap);

#endif
