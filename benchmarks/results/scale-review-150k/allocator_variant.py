import ctypes, os, sys
mm, tr = int(os.environ["MM"]), int(os.environ["TR"])
libc = ctypes.CDLL("libc.so.6")
if mm: print("mmap", libc.mallopt(-3, mm))
if tr: print("trim", libc.mallopt(-1, tr))
os.environ["METAREC_KEEP_FREED_MEMORY"] = "0"
from metarec.cli import main
sys.exit(main(sys.argv[1:]))
