/* A program written and compiled against piddm ABI 1 (tests/c/abi1/piddm.h, the header as released
 * then), run against this library: what keeps working works, and what changed answers with a status,
 * never a crash or a misread struct. Prints one "name status" line per call. */
#include "piddm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void show(const char *what, piddm_status s) { printf("%s %s\n", what, piddm_status_name(s)); }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    printf("header_abi %u library_abi %u\n", (unsigned)PIDDM_ABI_VERSION, piddm_abi_version());
    piddm_options o;
    memset(&o, 0, sizeof o);
    show("options_default", piddm_options_default(&o));
    o.intra_op_threads = 1;
    piddm_model *m = NULL;
    show("load_with_options", piddm_model_load(argv[1], &o, &m));
    piddm_model_free(&m);
    show("load_null_options", piddm_model_load(argv[1], NULL, &m));
    if (!m) return 1;
    size_t c, ny, nx;
    piddm_model_shape(m, &c, &ny, &nx);
    const size_t n = c * ny * nx;
    float *x = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
    unsigned char *mask = calloc(n, 1);
    memset(mask, 1, ny * nx);
    show("generate", piddm_generate(m, 1, 1, x, n));
    piddm_solve_params p;
    memset(&p, 0, sizeof p);
    show("solve_params_default", piddm_solve_params_default(m, &p));
    p.steps = 3;
    p.learning_rate = 0.05;
    show("solve_with_params", piddm_solve(m, x, mask, 1, &p, out, n, NULL));
    show("solve_null_params", piddm_solve(m, x, mask, 1, NULL, out, n, NULL));
    piddm_solve_report rep;
    memset(&rep, 0, sizeof rep);
    show("solve_with_report", piddm_solve(m, x, mask, 1, NULL, out, n, &rep));
    piddm_model_free(&m);
    free(x); free(out); free(mask);
    return 0;
}
