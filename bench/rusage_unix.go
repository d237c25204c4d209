//go:build unix

package bench

import (
	"os"
	"runtime"
	"syscall"
)

// usage is a finished child's peak resident memory in bytes and its user
// and system seconds.
func usage(ps *os.ProcessState) (maxRSS, cpu float64) {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0
	}
	maxRSS = float64(ru.Maxrss)
	if runtime.GOOS != "darwin" { // kilobytes elsewhere, bytes on macOS
		maxRSS *= 1024
	}
	return maxRSS, tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// cpuSeconds is this process's user and system time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}
