package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pkiFiles names every file that writePKI creates under <state>/pki.
type pkiFiles struct {
	CACert, CAKey                 string
	APIServerCert, APIServerKey   string
	AdminCert, AdminKey           string
	ControllerCert, ControllerKey string
	SAKey, SAPub                  string
}

func newPKIFiles(dir string) pkiFiles {
	p := func(name string) string { return filepath.Join(dir, name) }
	return pkiFiles{
		CACert: p("ca.crt"), CAKey: p("ca.key"),
		APIServerCert: p("apiserver.crt"), APIServerKey: p("apiserver.key"),
		AdminCert: p("admin.crt"), AdminKey: p("admin.key"),
		ControllerCert: p("controller-manager.crt"), ControllerKey: p("controller-manager.key"),
		SAKey: p("sa.key"), SAPub: p("sa.pub"),
	}
}

type keyPair struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	keyPEM  []byte
}

func newECKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// newCert creates a key pair and a certificate for it, signed by parent (or
// self-signed when parent is nil).
func newCert(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, keyPEM, err := newECKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(365 * 24 * time.Hour)
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		keyPEM:  keyPEM,
	}, nil
}

func clientCertTemplate(cn string, orgs ...string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// pkiMaterial is what the rest of the program needs in memory after writePKI.
type pkiMaterial struct {
	files pkiFiles
	ca    *keyPair
	admin *keyPair
	ctrl  *keyPair
}

// writePKI generates a fresh CA, the kube-apiserver serving certificate, the
// admin and controller-manager client certificates and the service-account
// signing key, and writes them as PEM files into dir.
func writePKI(dir string) (*pkiMaterial, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := newPKIFiles(dir)

	ca, err := newCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "kubedisco-testcluster-ca"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	serving, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost",
			"kubernetes",
			"kubernetes.default",
			"kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: []net.IP{
			net.ParseIP("127.0.0.1"),
			net.ParseIP("::1"),
			net.ParseIP(serviceClusterFirstIP),
		},
	}, ca)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver serving certificate: %w", err)
	}
	admin, err := newCert(clientCertTemplate("kubernetes-admin", "system:masters"), ca)
	if err != nil {
		return nil, fmt.Errorf("admin client certificate: %w", err)
	}
	ctrl, err := newCert(clientCertTemplate("system:kube-controller-manager"), ca)
	if err != nil {
		return nil, fmt.Errorf("controller-manager client certificate: %w", err)
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}

	writes := []struct {
		path string
		data []byte
	}{
		{files.CACert, ca.certPEM},
		{files.CAKey, ca.keyPEM},
		{files.APIServerCert, serving.certPEM},
		{files.APIServerKey, serving.keyPEM},
		{files.AdminCert, admin.certPEM},
		{files.AdminKey, admin.keyPEM},
		{files.ControllerCert, ctrl.certPEM},
		{files.ControllerKey, ctrl.keyPEM},
		{files.SAKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})},
		{files.SAPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
	}
	for _, w := range writes {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return nil, err
		}
	}
	return &pkiMaterial{files: files, ca: ca, admin: admin, ctrl: ctrl}, nil
}

// writeKubeconfig writes a kubeconfig with client-certificate authentication
// and every credential embedded, so the file is usable on its own.
func writeKubeconfig(path, server, user string, ca, client *keyPair) error {
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `apiVersion: v1
kind: Config
clusters:
- name: testcluster
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: %s@testcluster
  context:
    cluster: testcluster
    user: %s
    namespace: default
current-context: %s@testcluster
preferences: {}
`, server, b64(ca.certPEM), user, b64(client.certPEM), b64(client.keyPEM), user, user, user)
	return writeFileAtomic(path, []byte(sb.String()), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
