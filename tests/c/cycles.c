/* load / generate / solve / free, many times: watched for resident growth, and run under
 * AddressSanitizer (where freed memory sits in quarantine, so pass LIMIT_KB 0 there).
 * usage: cycles MODEL N LIMIT_KB */
#include "piddm.h"
#include <stdio.h>
#include <stdlib.h>

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
    return resident * 4;
}

int main(int argc, char **argv) {
    int n = argc > 2 ? atoi(argv[2]) : 1000;
    long limit_kb = argc > 3 ? atol(argv[3]) : 4096;
    piddm_options o;
    piddm_options_init(&o, sizeof o);
    o.intra_op_threads = 1;
    long rss_warm = 0;
    for (int i = 0; i < n; i++) {
        piddm_model *m = NULL;
        if (piddm_model_load(argv[1], &o, &m) != PIDDM_OK) { fprintf(stderr, "load: %s\n", piddm_last_error()); return 1; }
        size_t c, ny, nx;
        piddm_model_shape(m, &c, &ny, &nx);
        size_t len = c * ny * nx;
        float *x = malloc(len * sizeof(float)), *out = malloc(len * sizeof(float));
        unsigned char *mask = calloc(len, 1);
        for (size_t k = 0; k < ny * nx; k++) mask[k] = 1;
        piddm_model *shared = NULL;
        if (piddm_model_clone(m, &shared) != PIDDM_OK) { fprintf(stderr, "clone: %s\n", piddm_last_error()); return 1; }
        piddm_solve_params p;
        piddm_solve_params_init(shared, &p, sizeof p);
        p.steps = 2;
        if (piddm_generate(m, (uint64_t)i, 1, x, len) != PIDDM_OK || piddm_solve(m, x, mask, 1, &p, out, len, NULL) != PIDDM_OK) {
            fprintf(stderr, "cycle %d: %s\n", i, piddm_last_error());
            return 1;
        }
        piddm_generate(m, 1, 1, x, len - 1); /* error paths too */
        piddm_generate(m, 1, (size_t)-1, x, len);
        piddm_status_name(-5);
        free(x); free(out); free(mask);
        piddm_model_free(&m);
        /* the clone outlives the first handle */
        if (piddm_generate(shared, 2, 1, NULL, 0) != PIDDM_ERR_NULL) { fprintf(stderr, "clone after free\n"); return 1; }
        piddm_model_free(&shared);
        if (i == n / 10) rss_warm = rss_kb();
    }
    long growth = rss_kb() - rss_warm;
    printf("cycles %d, resident growth after warm-up %ld kB\n", n, growth);
    return limit_kb > 0 && growth > limit_kb;
}
