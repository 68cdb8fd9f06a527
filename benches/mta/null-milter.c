/*
 * A null milter on Sendmail's libmilter: the reference ceiling of
 * scripts/bench-mta.sh. It registers every stage, answers continue to each,
 * and accepts at end of message, as a libmilter milter that does nothing
 * would. It asks for nothing beyond what libmilter negotiates by default.
 * With --no-data it leaves out the DATA callback, as most milters do
 * (OpenDKIM among them): libmilter then tells the MTA not to send DATA.
 *
 *   cc -O2 -o null-milter null-milter.c -lmilter -pthread
 *   null-milter [--no-data] inet:PORT@127.0.0.1 | unix:/path/to/socket
 */
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr) { return SMFIS_CONTINUE; }
static sfsistat on_helo(SMFICTX *ctx, char *name) { return SMFIS_CONTINUE; }
static sfsistat on_envfrom(SMFICTX *ctx, char **argv) { return SMFIS_CONTINUE; }
static sfsistat on_envrcpt(SMFICTX *ctx, char **argv) { return SMFIS_CONTINUE; }
static sfsistat on_data(SMFICTX *ctx) { return SMFIS_CONTINUE; }
static sfsistat on_header(SMFICTX *ctx, char *name, char *value) { return SMFIS_CONTINUE; }
static sfsistat on_eoh(SMFICTX *ctx) { return SMFIS_CONTINUE; }
static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t len) { return SMFIS_CONTINUE; }
static sfsistat on_eom(SMFICTX *ctx) { return SMFIS_ACCEPT; }
static sfsistat on_abort(SMFICTX *ctx) { return SMFIS_CONTINUE; }
static sfsistat on_close(SMFICTX *ctx) { return SMFIS_CONTINUE; }
static sfsistat on_unknown(SMFICTX *ctx, const char *cmd) { return SMFIS_CONTINUE; }

int main(int argc, char **argv) {
    struct smfiDesc desc = {
        "null-milter", SMFI_VERSION, 0,
        on_connect, on_helo, on_envfrom, on_envrcpt, on_header, on_eoh,
        on_body, on_eom, on_abort, on_close, on_unknown, on_data, NULL,
    };
    const char *conn = argv[argc - 1];
    if (argc == 3 && strcmp(argv[1], "--no-data") == 0)
        desc.xxfi_data = NULL;
    else if (argc != 2) {
        fprintf(stderr, "usage: %s [--no-data] inet:PORT@HOST | unix:PATH\n", argv[0]);
        return 2;
    }
    if (strncmp(conn, "unix:", 5) == 0)
        unlink(conn + 5);
    if (smfi_setconn((char *)conn) == MI_FAILURE || smfi_setbacklog(512) == MI_FAILURE ||
        smfi_register(desc) == MI_FAILURE) {
        fprintf(stderr, "null-milter: cannot set up %s\n", conn);
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
