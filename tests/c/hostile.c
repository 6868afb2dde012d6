/* One hostile call per process: what a C caller can pass that once killed the host. The driver
 * (tests/hostile.rs) runs every case in its own process and checks the status printed here and
 * that the process exits normally.
 * usage: hostile CASE MODEL [FILE]  ->  prints "status NAME" and exits 0 */
#include "piddm.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ABI 1's initialisers: still exported, not declared in the current header. */
piddm_status piddm_options_default(void *opts);
piddm_status piddm_solve_params_default(const void *m, void *params);

/* ABI 1's layouts, as a program compiled against the previous header has them. */
typedef struct { int32_t device, device_id, cuda_fallback_to_cpu, intra_op_threads; const char *ort_library; } options_v1;
typedef struct { uint32_t steps; double learning_rate, lambda_infer; uint64_t seed; } params_v1;
typedef struct { uint32_t steps; double initial_loss, final_loss, misfit, residual; double *loss_history; size_t loss_history_len; } report_v1;

static piddm_model *load(const char *path) {
    piddm_model *m = NULL;
    piddm_options o;
    piddm_options_init(&o, sizeof o);
    o.intra_op_threads = 1;
    if (piddm_model_load(path, &o, &m) != PIDDM_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, piddm_last_error());
        exit(3);
    }
    return m;
}

/* The message of the call that returned `s`, kept before any later call resets it. */
static char message[8192];
static piddm_status keep(piddm_status s) {
    snprintf(message, sizeof message, "%s", piddm_last_error());
    return s;
}
static int report(piddm_status s) {
    printf("status %s\nmessage %s\n", piddm_status_name(s), message);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *c = argv[1], *path = argv[2], *file = argc > 3 ? argv[3] : path;
    if (!strcmp(c, "status_name")) {
        /* every int is a valid argument */
        int ok = !strcmp(piddm_status_name(-1), "PIDDM_UNKNOWN_STATUS") && !strcmp(piddm_status_name(1 << 30), "PIDDM_UNKNOWN_STATUS") &&
                 !strcmp(piddm_status_name(INT32_MIN), "PIDDM_UNKNOWN_STATUS") && !strcmp(piddm_status_name(PIDDM_ERR_ABI), "PIDDM_ERR_ABI");
        printf("status %s\n", ok ? "PIDDM_OK" : "wrong names");
        return 0;
    }
    if (!strcmp(c, "load")) { /* a file the driver crafted (or a FIFO, a device, a directory) */
        piddm_model *m = (piddm_model *)1;
        piddm_status s = keep(piddm_model_load(file, NULL, &m));
        if (m != NULL && s != PIDDM_OK) { printf("status handle not NULLed\n"); return 0; }
        if (s == PIDDM_OK) {
            /* it loaded: then a call must work too */
            size_t ch, ny, nx;
            piddm_model_shape(m, &ch, &ny, &nx);
            float *x = malloc(ch * ny * nx * sizeof(float));
            s = keep(piddm_generate(m, 1, 1, x, ch * ny * nx));
            free(x);
            piddm_model_free(&m);
        }
        return report(s);
    }
    if (!strcmp(c, "load_unverified")) {
        piddm_options o;
        piddm_options_init(&o, sizeof o);
        o.verify_weights = 0;
        piddm_model *m = NULL;
        piddm_status s = keep(piddm_model_load(file, &o, &m));
        piddm_model_free(&m);
        return report(s);
    }
    if (!strcmp(c, "options_v1")) { /* a caller built against ABI 1 */
        options_v1 o;
        piddm_status s0 = keep(piddm_options_default(&o));
        memset(&o, 0, sizeof o);
        o.intra_op_threads = 1;
        piddm_model *m = NULL;
        piddm_status s = keep(piddm_model_load(path, (const piddm_options *)(const void *)&o, &m));
        piddm_model_free(&m);
        if (s0 != PIDDM_ERR_ABI) return report(s0);
        return report(s);
    }
    if (!strcmp(c, "options_default_v1")) {
        options_v1 o;
        return report(keep(piddm_options_default(&o)));
    }
    if (!strcmp(c, "options_init_size")) {
        piddm_options o;
        memset(&o, 0x5a, sizeof o);
        /* 44 bytes: neither the first layout (40) nor the current one (48). */
        piddm_status s = keep(piddm_options_init(&o, sizeof o - 4));
        if (o.size != 0x5a5a5a5a5a5a5a5aull) { printf("status wrote past a refused size\n"); return 0; }
        return report(s);
    }
    if (!strcmp(c, "options_init_first_layout")) {
        /* A caller built before `precision` passes 40 bytes: those are filled, nothing after. */
        piddm_options o;
        memset(&o, 0x5a, sizeof o);
        piddm_status s = keep(piddm_options_init(&o, 40));
        if (o.size != 40 || o.verify_weights != 1) { printf("status first layout not filled\n"); return 0; }
        /* precision sits in the first layout's padding; reserved starts past its 40 bytes */
        if (o.reserved != 0x5a5a5a5a) { printf("status wrote past the first layout\n"); return 0; }
        return report(s);
    }
    piddm_model *m = load(path);
    size_t ch, ny, nx;
    piddm_model_shape(m, &ch, &ny, &nx);
    const size_t n = ch * ny * nx;
    float *x = calloc(n, sizeof(float)), *out = calloc(n, sizeof(float));
    unsigned char *mask = calloc(n, 1);
    memset(mask, 1, ny * nx);
    piddm_solve_params p;
    piddm_solve_params_init(m, &p, sizeof p);
    piddm_status s = PIDDM_OK;
    if (!strcmp(c, "generate_batch_max")) s = keep(piddm_generate(m, 1, SIZE_MAX, out, n));
    else if (!strcmp(c, "generate_batch_over_limit")) s = keep(piddm_generate(m, 1, PIDDM_MAX_BATCH + 1, out, n));
    else if (!strcmp(c, "generate_batch_huge_len")) s = keep(piddm_generate(m, 1, (size_t)1 << 40, out, ((size_t)1 << 40) * n));
    else if (!strcmp(c, "residual_batch_max")) s = keep(piddm_residual(m, x, SIZE_MAX / n + 1, out, n, NULL));
    else if (!strcmp(c, "solve_batch_max")) s = keep(piddm_solve(m, x, mask, SIZE_MAX, NULL, out, n, NULL));
    else if (!strcmp(c, "solve_steps_negative")) { p.steps = -1; s = keep(piddm_solve(m, x, mask, 1, &p, out, n, NULL)); }
    else if (!strcmp(c, "solve_steps_huge")) { p.steps = INT64_MAX; s = keep(piddm_solve(m, x, mask, 1, &p, out, n, NULL)); }
    else if (!strcmp(c, "solve_steps_over_limit")) { p.steps = PIDDM_MAX_STEPS + 1; s = keep(piddm_solve(m, x, mask, 1, &p, out, n, NULL)); }
    else if (!strcmp(c, "solve_lr_nan")) { p.learning_rate = NAN; s = keep(piddm_solve(m, x, mask, 1, &p, out, n, NULL)); }
    else if (!strcmp(c, "solve_lambda_negative")) { p.lambda_infer = -1; s = keep(piddm_solve(m, x, mask, 1, &p, out, n, NULL)); }
    else if (!strcmp(c, "params_v1")) {
        params_v1 v1 = {200, 1e-2, 1e-3, 0};
        piddm_status s0 = keep(piddm_solve_params_default(m, &v1));
        s = keep(piddm_solve(m, x, mask, 1, (const piddm_solve_params *)(const void *)&v1, out, n, NULL));
        if (s0 != PIDDM_ERR_ABI) s = s0;
    } else if (!strcmp(c, "report_v1")) {
        report_v1 r;
        memset(&r, 0, sizeof r);
        p.steps = 2;
        s = keep(piddm_solve(m, x, mask, 1, &p, out, n, (piddm_solve_report *)(void *)&r));
    } else if (!strcmp(c, "params_default_v1")) { params_v1 v1; s = keep(piddm_solve_params_default(m, &v1)); }
    else if (!strcmp(c, "params_init_size")) s = keep(piddm_solve_params_init(m, &p, 8));
    else if (!strcmp(c, "report_init_size")) { piddm_solve_report r; s = keep(piddm_solve_report_init(&r, 0)); }
    else if (!strcmp(c, "device_unknown")) {
        piddm_options o;
        piddm_options_init(&o, sizeof o);
        o.device = 99;
        piddm_model *b = NULL;
        s = keep(piddm_model_load(path, &o, &b));
    } else if (!strcmp(c, "threads_negative")) {
        piddm_options o;
        piddm_options_init(&o, sizeof o);
        o.intra_op_threads = -4;
        piddm_model *b = NULL;
        s = keep(piddm_model_load(path, &o, &b));
    } else if (!strcmp(c, "threads_huge")) {
        piddm_options o;
        piddm_options_init(&o, sizeof o);
        o.intra_op_threads = INT32_MAX;
        piddm_model *b = NULL;
        s = keep(piddm_model_load(path, &o, &b));
    } else if (!strcmp(c, "clone_null")) {
        piddm_model *b = (piddm_model *)1;
        s = keep(piddm_model_clone(NULL, &b));
        if (b != NULL) { printf("status handle not NULLed\n"); return 0; }
    } else { fprintf(stderr, "unknown case %s\n", c); return 2; }
    piddm_model_free(&m);
    free(x); free(out); free(mask);
    return report(s);
}
