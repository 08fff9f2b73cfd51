/*
 * For tests: an LD_PRELOAD library making a server that binds the wildcard
 * address (0.0.0.0 or ::) bind loopback (127.0.0.1, ::1) instead, and say
 * so on stderr ("bound to loopback").  For servers with no option to choose
 * their address, such as GnuTLS's gnutls-serv (tests/p2hello.py): servers
 * that tests start listen on loopback only.  Compiled by the tests.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int bound(int result)
{
    static const char said[] = "bound to loopback\n";

    if (result == 0 && write(2, said, sizeof said - 1) < 0) {
        /* nothing to do: the marker is a courtesy */
    }
    return result;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    bind_fn real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;

    if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof in4) {
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return bound(real(fd, (const struct sockaddr *)&in4, sizeof in4));
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6 && len >= sizeof in6) {
        memcpy(&in6, addr, sizeof in6);
        if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
            in6.sin6_addr = in6addr_loopback;
            return bound(real(fd, (const struct sockaddr *)&in6, sizeof in6));
        }
    }
    return real(fd, addr, len);
}
