// A Go net/http server over TLS (crypto/tls, as Ollama's): a TLS stack no OpenSSL probe
// sees. Prints its port, then answers every request with "ok".
// Run: go_tls_app CERT.pem KEY.pem
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	})
	panic(http.ServeTLS(l, ok, os.Args[1], os.Args[2]))
}
