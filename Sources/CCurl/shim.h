// libcurl (Debian's libcurl4-openssl-dev) for the SMTP notifier. curl_easy_setopt is variadic,
// which Swift cannot call, so the whole send is one C function here.
#ifndef FLOWKIT_CCURL_SHIM_H
#define FLOWKIT_CCURL_SHIM_H
#include <curl/curl.h>
#include <string.h>

typedef struct { const char *data; size_t len; size_t pos; } fk_upload;

static inline size_t fk_upload_read(char *buf, size_t size, size_t nitems, void *userp) {
    fk_upload *u = (fk_upload *)userp;
    size_t room = size * nitems, left = u->len - u->pos;
    size_t n = left < room ? left : room;
    memcpy(buf, u->data + u->pos, n);
    u->pos += n;
    return n;
}

/// Sends one message (RFC 5322, CRLF lines) over SMTP. tls: 0 none, 1 STARTTLS if offered,
/// 2 STARTTLS required (implicit TLS for smtps:// URLs). Returns a CURLcode (0 = sent); on
/// failure `errbuf` (CURL_ERROR_SIZE bytes) says why and `*reply` holds the server's last code.
static inline int fk_smtp_send(const char *url, const char *user, const char *password, const char *from,
                               const char *const *rcpts, int nrcpt, const char *payload, size_t len,
                               const char *cainfo, int tls, long timeout_s, char *errbuf, long *reply) {
    CURL *c = curl_easy_init();
    errbuf[0] = 0;
    *reply = 0;
    if (!c) { strcpy(errbuf, "curl_easy_init failed"); return -1; }
    struct curl_slist *to = NULL;
    for (int i = 0; i < nrcpt; i++) to = curl_slist_append(to, rcpts[i]);
    fk_upload u = { payload, len, 0 };
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, timeout_s);
    if (user && *user) curl_easy_setopt(c, CURLOPT_USERNAME, user);
    if (password && *password) curl_easy_setopt(c, CURLOPT_PASSWORD, password);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)(tls == 2 ? CURLUSESSL_ALL : tls == 1 ? CURLUSESSL_TRY : CURLUSESSL_NONE));
    if (cainfo && *cainfo) curl_easy_setopt(c, CURLOPT_CAINFO, cainfo);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, fk_upload_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, reply);
    if (rc != CURLE_OK && !errbuf[0]) strncpy(errbuf, curl_easy_strerror(rc), CURL_ERROR_SIZE - 1);
    curl_slist_free_all(to);
    curl_easy_cleanup(c);
    return (int)rc;
}
#endif
