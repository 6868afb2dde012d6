! piddm Fortran module: the C API through iso_c_binding, with a model type that frees itself.
! Arrays are plain real(c_float) arrays of rank 2 to 4 in the solver's own layout:
!   rank 4: x(nx, ny, channels, batch)   rank 3: x(nx, ny, channels)   rank 2: x(nx*ny, channels)
! (the same memory as the C layout [batch][channel][ny][nx]: no copies). The batch is the array's
! size divided by channels*ny*nx. Every procedure takes an optional `stat`; without it, a failure
! prints piddm_last_error() and stops.
! The bind(c) types mirror piddm.h's size-prefixed structs: take them from piddm_default_options()
! and model%default_solve_params(), which set `size` (a zero size is refused with PIDDM_ERR_ABI).
! Assigning one piddm_model to another shares the loaded model (piddm_model_clone): each variable
! releases its own handle, so copies never double-free.
module piddm
  use, intrinsic :: iso_c_binding
  implicit none
  private

  integer(c_int), parameter, public :: PIDDM_OK = 0, PIDDM_ERR_NULL = 1, PIDDM_ERR_INVALID_ARGUMENT = 2, &
    PIDDM_ERR_SIZE = 3, PIDDM_ERR_NONFINITE = 4, PIDDM_ERR_IO = 5, PIDDM_ERR_FORMAT = 6, &
    PIDDM_ERR_RUNTIME = 7, PIDDM_ERR_DEVICE = 8, PIDDM_ERR_PANIC = 9, PIDDM_ERR_ABI = 10
  integer(c_int), parameter, public :: PIDDM_DEVICE_CPU = 0, PIDDM_DEVICE_CUDA = 1
  ! where a solve starts (params%start) and the optimiser of its steps (params%optimizer)
  integer(c_int32_t), parameter, public :: PIDDM_START_AUTO = 0, PIDDM_START_RANDOM = 1, &
    PIDDM_START_AMORTISED = 2
  integer(c_int32_t), parameter, public :: PIDDM_OPTIMIZER_ADAM = 0, PIDDM_OPTIMIZER_LBFGS = 1
  integer(c_int32_t), parameter, public :: PIDDM_PRECISION_FP32 = 0, PIDDM_PRECISION_INT8 = 1

  type, bind(c), public :: piddm_options
    integer(c_size_t) :: size = 0
    integer(c_int32_t) :: device = 0
    integer(c_int32_t) :: device_id = 0
    integer(c_int32_t) :: cuda_fallback_to_cpu = 0
    integer(c_int32_t) :: intra_op_threads = 0
    type(c_ptr) :: ort_library = c_null_ptr
    integer(c_int32_t) :: verify_weights = 0
    integer(c_int32_t) :: precision = PIDDM_PRECISION_FP32
    integer(c_int32_t) :: reserved = 0
  end type

  ! steps is signed: a negative count is refused (PIDDM_ERR_INVALID_ARGUMENT), never a huge one
  type, bind(c), public :: piddm_solve_params
    integer(c_size_t) :: size = 0
    integer(c_int64_t) :: steps = 0
    real(c_double) :: learning_rate = 0
    real(c_double) :: lambda_infer = 0
    integer(c_int64_t) :: seed = 0
    ! steps = 0 with the amortised start (PIDDM_START_AUTO on a model that has it): one call
    integer(c_int32_t) :: start = PIDDM_START_AUTO
    integer(c_int32_t) :: optimizer = PIDDM_OPTIMIZER_ADAM
    ! scale of z for the amortised start: 1 as trained, 0 the encoder's central answer
    real(c_double) :: noise_scale = 1
  end type

  type, bind(c), public :: piddm_solve_report
    integer(c_size_t) :: size = 0
    integer(c_int64_t) :: steps = 0
    real(c_double) :: initial_loss = 0, final_loss = 0, misfit = 0, residual = 0
    type(c_ptr) :: loss_history = c_null_ptr
    integer(c_size_t) :: loss_history_len = 0
  end type

  type, public :: piddm_model
    type(c_ptr) :: handle = c_null_ptr
    ! nr: channels of the residual map (1, or one per time level for Navier-Stokes)
    integer :: nc = 0, ny = 0, nx = 0, nr = 1
  contains
    procedure :: load => model_load
    procedure :: free => model_free
    procedure :: default_solve_params => model_default_params
    procedure :: has_amortised => model_has_amortised
    procedure, private :: gen2, gen3, gen4
    generic :: generate => gen2, gen3, gen4
    procedure, private :: res2, res3, res4
    generic :: residual => res2, res3, res4
    procedure, private :: solve2, solve3, solve4
    generic :: solve => solve2, solve3, solve4
    procedure, private :: spread3, spread4
    generic :: solve_spread => spread3, spread4
    procedure, private :: model_assign
    generic :: assignment(=) => model_assign
    final :: model_final
  end type

  public :: piddm_check, piddm_last_error_message, piddm_default_options

  interface
    function c_last_error() bind(c, name="piddm_last_error") result(p)
      import :: c_ptr
      type(c_ptr) :: p
    end function
    function c_load(path, opts, out) bind(c, name="piddm_model_load") result(s)
      import :: c_char, c_ptr, c_int, piddm_options
      character(kind=c_char), intent(in) :: path(*)
      type(piddm_options), intent(in) :: opts
      type(c_ptr), intent(out) :: out
      integer(c_int) :: s
    end function
    function c_clone(m, out) bind(c, name="piddm_model_clone") result(s)
      import :: c_ptr, c_int
      type(c_ptr), value :: m
      type(c_ptr), intent(out) :: out
      integer(c_int) :: s
    end function
    function c_options_init(o, size) bind(c, name="piddm_options_init") result(s)
      import :: c_size_t, c_int, piddm_options
      type(piddm_options), intent(inout) :: o
      integer(c_size_t), value :: size
      integer(c_int) :: s
    end function
    function c_report_init(r, size) bind(c, name="piddm_solve_report_init") result(s)
      import :: c_size_t, c_int, piddm_solve_report
      type(piddm_solve_report), intent(inout) :: r
      integer(c_size_t), value :: size
      integer(c_int) :: s
    end function
    subroutine c_free(m) bind(c, name="piddm_model_free")
      import :: c_ptr
      type(c_ptr), intent(inout) :: m
    end subroutine
    function c_shape(m, c, ny, nx) bind(c, name="piddm_model_shape") result(s)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: m
      integer(c_size_t), intent(out) :: c, ny, nx
      integer(c_int) :: s
    end function
    function c_generate(m, seed, batch, out, n) bind(c, name="piddm_generate") result(s)
      import :: c_ptr, c_int64_t, c_size_t, c_float, c_int
      type(c_ptr), value :: m
      integer(c_int64_t), value :: seed
      integer(c_size_t), value :: batch, n
      real(c_float), intent(out) :: out(*)
      integer(c_int) :: s
    end function
    function c_residual(m, fields, batch, r, n, ms) bind(c, name="piddm_residual") result(s)
      import :: c_ptr, c_size_t, c_float, c_double, c_int
      type(c_ptr), value :: m
      real(c_float), intent(in) :: fields(*)
      integer(c_size_t), value :: batch, n
      real(c_float), intent(out) :: r(*)
      real(c_double), intent(out) :: ms
      integer(c_int) :: s
    end function
    function c_params_init(m, p, size) bind(c, name="piddm_solve_params_init") result(s)
      import :: c_ptr, c_int, c_size_t, piddm_solve_params
      type(c_ptr), value :: m
      type(piddm_solve_params), intent(inout) :: p
      integer(c_size_t), value :: size
      integer(c_int) :: s
    end function
    function c_residual_channels(m, rc) bind(c, name="piddm_model_residual_channels") result(s)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: m
      integer(c_size_t), intent(out) :: rc
      integer(c_int) :: s
    end function
    function c_has_amortised(m, has) bind(c, name="piddm_model_has_amortised") result(s)
      import :: c_ptr, c_int, c_int32_t
      type(c_ptr), value :: m
      integer(c_int32_t), intent(out) :: has
      integer(c_int) :: s
    end function
    function c_solve(m, obs, mask, batch, p, out, n, rep) bind(c, name="piddm_solve") result(s)
      import :: c_ptr, c_size_t, c_float, c_int, c_int8_t, piddm_solve_params, piddm_solve_report
      type(c_ptr), value :: m
      real(c_float), intent(in) :: obs(*)
      integer(c_int8_t), intent(in) :: mask(*)
      integer(c_size_t), value :: batch, n
      type(piddm_solve_params), intent(in) :: p
      real(c_float), intent(out) :: out(*)
      type(piddm_solve_report), intent(inout) :: rep
      integer(c_int) :: s
    end function
    function c_solve_spread(m, obs, mask, batch, k, p, mean, std, n, scale) &
      bind(c, name="piddm_solve_spread") result(s)
      import :: c_ptr, c_size_t, c_float, c_double, c_int, c_int8_t, piddm_solve_params
      type(c_ptr), value :: m
      real(c_float), intent(in) :: obs(*)
      integer(c_int8_t), intent(in) :: mask(*)
      integer(c_size_t), value :: batch, k, n
      type(piddm_solve_params), intent(in) :: p
      real(c_float), intent(out) :: mean(*), std(*)
      real(c_double), intent(out) :: scale(*)
      integer(c_int) :: s
    end function
    function c_strlen(p) bind(c, name="strlen") result(n)
      import :: c_ptr, c_size_t
      type(c_ptr), value :: p
      integer(c_size_t) :: n
    end function
  end interface

contains

  !> This thread's last error message.
  function piddm_last_error_message() result(msg)
    character(len=:), allocatable :: msg
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: p
    integer :: i, n
    p = c_last_error()
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate (character(len=n) :: msg)
    do i = 1, n
      msg(i:i) = chars(i)
    end do
  end function

  !> Returns `status` in `stat` when present; otherwise stops with the library's message on failure.
  subroutine piddm_check(status, where, stat)
    integer(c_int), intent(in) :: status
    character(*), intent(in) :: where
    integer, intent(out), optional :: stat
    if (present(stat)) then
      stat = status
    else if (status /= PIDDM_OK) then
      write (*, '(a,": piddm error ",i0,": ",a)') where, status, piddm_last_error_message()
      error stop 1
    end if
  end subroutine

  !> The library's default load options (CPU, ONNX Runtime's threads, weights verified).
  function piddm_default_options() result(o)
    type(piddm_options) :: o
    call piddm_check(c_options_init(o, c_sizeof(o)), "piddm default options")
  end function

  subroutine model_load(self, path, opts, stat)
    class(piddm_model), intent(inout) :: self
    character(*), intent(in) :: path
    type(piddm_options), intent(in), optional :: opts
    integer, intent(out), optional :: stat
    type(piddm_options) :: o
    integer(c_size_t) :: c, ny, nx, rc
    integer(c_int) :: s
    if (present(opts)) then
      o = opts
    else
      o = piddm_default_options()
    end if
    call c_free(self%handle)
    s = c_load(path//c_null_char, o, self%handle)
    if (s == PIDDM_OK) then
      s = c_shape(self%handle, c, ny, nx)
      self%nc = int(c); self%ny = int(ny); self%nx = int(nx)
    end if
    if (s == PIDDM_OK) then
      s = c_residual_channels(self%handle, rc)
      self%nr = int(rc)
    end if
    call piddm_check(s, "piddm load "//path, stat)
  end subroutine

  subroutine model_free(self)
    class(piddm_model), intent(inout) :: self
    call c_free(self%handle)
  end subroutine

  subroutine model_final(self)
    type(piddm_model), intent(inout) :: self
    call c_free(self%handle)
  end subroutine

  !> lhs = rhs: lhs gets its own handle to rhs's model (self-assignment safe: clone, then free).
  subroutine model_assign(lhs, rhs)
    class(piddm_model), intent(inout) :: lhs
    class(piddm_model), intent(in) :: rhs
    type(c_ptr) :: h
    h = c_null_ptr
    if (c_associated(rhs%handle)) call piddm_check(c_clone(rhs%handle, h), "piddm model assignment")
    call c_free(lhs%handle)
    lhs%handle = h
    lhs%nc = rhs%nc; lhs%ny = rhs%ny; lhs%nx = rhs%nx
  end subroutine

  function model_default_params(self) result(p)
    class(piddm_model), intent(in) :: self
    type(piddm_solve_params) :: p
    call piddm_check(c_params_init(self%handle, p, c_sizeof(p)), "piddm default_solve_params")
  end function

  ! whether the model answers a solve in one call (steps = 0) with its amortised encoder
  logical function model_has_amortised(self, stat) result(has)
    class(piddm_model), intent(in) :: self
    integer, intent(out), optional :: stat
    integer(c_int32_t) :: h
    h = 0
    call piddm_check(c_has_amortised(self%handle, h), "piddm has_amortised", stat)
    has = h /= 0
  end function

  integer(c_size_t) function batch_of(self, n) result(b)
    class(piddm_model), intent(in) :: self
    integer(c_size_t), intent(in) :: n
    integer(c_size_t) :: field
    field = int(self%nc, c_size_t)*int(self%ny, c_size_t)*int(self%nx, c_size_t)
    b = 0
    if (field > 0) b = max(1_c_size_t, n/field)
  end function

  ! generate: x gets one-step samples drawn from `seed`
  subroutine gen_any(self, seed, x, n, stat)
    class(piddm_model), intent(in) :: self
    integer(c_int64_t), intent(in) :: seed
    integer(c_size_t), intent(in) :: n
    real(c_float), intent(out) :: x(*)
    integer, intent(out), optional :: stat
    call piddm_check(c_generate(self%handle, seed, batch_of(self, n), x, n), "piddm generate", stat)
  end subroutine
  subroutine gen2(self, seed, x, stat)
    class(piddm_model), intent(in) :: self
    integer(c_int64_t), intent(in) :: seed
    real(c_float), intent(out), contiguous :: x(:, :)
    integer, intent(out), optional :: stat
    call gen_any(self, seed, x, size(x, kind=c_size_t), stat)
  end subroutine
  subroutine gen3(self, seed, x, stat)
    class(piddm_model), intent(in) :: self
    integer(c_int64_t), intent(in) :: seed
    real(c_float), intent(out), contiguous :: x(:, :, :)
    integer, intent(out), optional :: stat
    call gen_any(self, seed, x, size(x, kind=c_size_t), stat)
  end subroutine
  subroutine gen4(self, seed, x, stat)
    class(piddm_model), intent(in) :: self
    integer(c_int64_t), intent(in) :: seed
    real(c_float), intent(out), contiguous :: x(:, :, :, :)
    integer, intent(out), optional :: stat
    call gen_any(self, seed, x, size(x, kind=c_size_t), stat)
  end subroutine

  ! residual: r (nr channels per sample: r(:, :, batch) for nr = 1, else pass r flat, the rank-1
  ! form) of fields x; mean_sq over the points where an equation holds
  subroutine res_any(self, x, n, r, nr, mean_sq, stat)
    class(piddm_model), intent(in) :: self
    integer(c_size_t), intent(in) :: n, nr
    real(c_float), intent(in) :: x(*)
    real(c_float), intent(out) :: r(*)
    real(c_double), intent(out) :: mean_sq
    integer, intent(out), optional :: stat
    call piddm_check(c_residual(self%handle, x, batch_of(self, n), r, nr, mean_sq), "piddm residual", stat)
  end subroutine
  subroutine res2(self, x, r, mean_sq, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: x(:, :)
    real(c_float), intent(out), contiguous :: r(:)
    real(c_double), intent(out) :: mean_sq
    integer, intent(out), optional :: stat
    call res_any(self, x, size(x, kind=c_size_t), r, size(r, kind=c_size_t), mean_sq, stat)
  end subroutine
  subroutine res3(self, x, r, mean_sq, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: x(:, :, :)
    real(c_float), intent(out), contiguous :: r(:, :)
    real(c_double), intent(out) :: mean_sq
    integer, intent(out), optional :: stat
    call res_any(self, x, size(x, kind=c_size_t), r, size(r, kind=c_size_t), mean_sq, stat)
  end subroutine
  subroutine res4(self, x, r, mean_sq, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: x(:, :, :, :)
    real(c_float), intent(out), contiguous :: r(:, :, :)
    real(c_double), intent(out) :: mean_sq
    integer, intent(out), optional :: stat
    call res_any(self, x, size(x, kind=c_size_t), r, size(r, kind=c_size_t), mean_sq, stat)
  end subroutine

  ! solve: observed where mask /= 0; the answer goes to x
  ! loss_history (optional) receives the loss before each step and after the last
  subroutine solve_any(self, obs, mask, n, p, x, report, loss_history, stat)
    class(piddm_model), intent(in) :: self
    integer(c_size_t), intent(in) :: n
    real(c_float), intent(in) :: obs(*)
    integer(c_int8_t), intent(in) :: mask(*)
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out) :: x(*)
    type(piddm_solve_report), intent(out), optional :: report
    real(c_double), intent(inout), optional, target, contiguous :: loss_history(:)
    integer, intent(out), optional :: stat
    type(piddm_solve_report) :: rep
    integer(c_int) :: s
    s = c_report_init(rep, c_sizeof(rep))
    if (s == PIDDM_OK .and. present(loss_history)) then
      if (size(loss_history) > 0) then
        rep%loss_history = c_loc(loss_history)
        rep%loss_history_len = size(loss_history, kind=c_size_t)
      end if
    end if
    if (s == PIDDM_OK) s = c_solve(self%handle, obs, mask, batch_of(self, n), p, x, n, rep)
    rep%loss_history = c_null_ptr
    call piddm_check(s, "piddm solve", stat)
    if (present(report)) report = rep
  end subroutine
  subroutine solve2(self, obs, mask, p, x, report, loss_history, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: obs(:, :)
    integer(c_int8_t), intent(in), contiguous :: mask(:, :)
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out), contiguous :: x(:, :)
    type(piddm_solve_report), intent(out), optional :: report
    real(c_double), intent(inout), optional, target, contiguous :: loss_history(:)
    integer, intent(out), optional :: stat
    if (size(mask) /= size(obs)) then
      call piddm_check(PIDDM_ERR_SIZE, "piddm solve: mask and observations differ in size", stat); return
    end if
    call solve_any(self, obs, mask, size(x, kind=c_size_t), p, x, report, loss_history, stat)
  end subroutine
  subroutine solve3(self, obs, mask, p, x, report, loss_history, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: obs(:, :, :)
    integer(c_int8_t), intent(in), contiguous :: mask(:, :, :)
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out), contiguous :: x(:, :, :)
    type(piddm_solve_report), intent(out), optional :: report
    real(c_double), intent(inout), optional, target, contiguous :: loss_history(:)
    integer, intent(out), optional :: stat
    if (size(mask) /= size(obs)) then
      call piddm_check(PIDDM_ERR_SIZE, "piddm solve: mask and observations differ in size", stat); return
    end if
    call solve_any(self, obs, mask, size(x, kind=c_size_t), p, x, report, loss_history, stat)
  end subroutine
  subroutine solve4(self, obs, mask, p, x, report, loss_history, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: obs(:, :, :, :)
    integer(c_int8_t), intent(in), contiguous :: mask(:, :, :, :)
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out), contiguous :: x(:, :, :, :)
    type(piddm_solve_report), intent(out), optional :: report
    real(c_double), intent(inout), optional, target, contiguous :: loss_history(:)
    integer, intent(out), optional :: stat
    if (size(mask) /= size(obs)) then
      call piddm_check(PIDDM_ERR_SIZE, "piddm solve: mask and observations differ in size", stat); return
    end if
    call solve_any(self, obs, mask, size(x, kind=c_size_t), p, x, report, loss_history, stat)
  end subroutine

  ! solve_spread: `answers` one-call answers per observation; their mean and their std with the
  ! model's spread calibration applied (mean +- 2 std is the calibrated band); std_scale
  ! (optional, one per sample) receives the scale each sample took
  subroutine spread_any(self, obs, mask, n, answers, p, mean, std, std_scale, stat)
    class(piddm_model), intent(in) :: self
    integer(c_size_t), intent(in) :: n
    integer, intent(in) :: answers
    real(c_float), intent(in) :: obs(*)
    integer(c_int8_t), intent(in) :: mask(*)
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out) :: mean(*), std(*)
    real(c_double), intent(out), optional, contiguous :: std_scale(:)
    integer, intent(out), optional :: stat
    real(c_double), allocatable :: scale(:)
    integer(c_size_t) :: b
    b = batch_of(self, n)
    allocate (scale(b))
    if (present(std_scale)) then
      if (size(std_scale, kind=c_size_t) /= b) then
        call piddm_check(PIDDM_ERR_SIZE, "piddm solve_spread: std_scale needs one value per sample", stat); return
      end if
    end if
    if (answers < 0) then
      call piddm_check(PIDDM_ERR_INVALID_ARGUMENT, "piddm solve_spread: answers must be 2 or more", stat); return
    end if
    call piddm_check(c_solve_spread(self%handle, obs, mask, b, int(answers, c_size_t), p, mean, std, n, scale), &
                     "piddm solve_spread", stat)
    if (present(std_scale)) std_scale = scale
  end subroutine
  subroutine spread3(self, obs, mask, answers, p, mean, std, std_scale, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: obs(:, :, :)
    integer(c_int8_t), intent(in), contiguous :: mask(:, :, :)
    integer, intent(in) :: answers
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out), contiguous :: mean(:, :, :), std(:, :, :)
    real(c_double), intent(out), optional, contiguous :: std_scale(:)
    integer, intent(out), optional :: stat
    if (size(mask) /= size(obs) .or. size(mean) /= size(obs) .or. size(std) /= size(obs)) then
      call piddm_check(PIDDM_ERR_SIZE, "piddm solve_spread: observations, mask, mean and std differ in size", stat); return
    end if
    call spread_any(self, obs, mask, size(obs, kind=c_size_t), answers, p, mean, std, std_scale, stat)
  end subroutine
  subroutine spread4(self, obs, mask, answers, p, mean, std, std_scale, stat)
    class(piddm_model), intent(in) :: self
    real(c_float), intent(in), contiguous :: obs(:, :, :, :)
    integer(c_int8_t), intent(in), contiguous :: mask(:, :, :, :)
    integer, intent(in) :: answers
    type(piddm_solve_params), intent(in) :: p
    real(c_float), intent(out), contiguous :: mean(:, :, :, :), std(:, :, :, :)
    real(c_double), intent(out), optional, contiguous :: std_scale(:)
    integer, intent(out), optional :: stat
    if (size(mask) /= size(obs) .or. size(mean) /= size(obs) .or. size(std) /= size(obs)) then
      call piddm_check(PIDDM_ERR_SIZE, "piddm solve_spread: observations, mask, mean and std differ in size", stat); return
    end if
    call spread_any(self, obs, mask, size(obs, kind=c_size_t), answers, p, mean, std, std_scale, stat)
  end subroutine

end module piddm
